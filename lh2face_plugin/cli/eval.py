"""``lh2face eval``: verification .bin sets and IJB-B/IJB-C (1:1 and 1:N)."""
from __future__ import annotations

import argparse
import os

from ._common import add_command, input_module_model


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model.pt (arcface_torch or ours) or an exported .onnx")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--network", help="backbone name of a .pt model, e.g. r50 (from ARCFACE_TORCH_ROOT if set); "
                                     "a model trained behind @render or config.input_module reloads from the "
                                     "record beside it")
    g.add_argument("--onnx", action="store_true", help="the model is an ONNX file (onnxruntime)")
    p.add_argument("--arcface-root", default=None, help="arcface_torch checkout (default: $ARCFACE_TORCH_ROOT)")
    p.add_argument("--batch-size", type=int, default=128, help="images per forward pass (default 128)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default cpu)")
    p.add_argument("--out", default="lh2face_runs/eval",
                   help="results.json (merged: several sets and commands may share it), roc_<NAME>.png and the "
                        "feature cache (reused for the same model, settings and images)")


def _model_key(args) -> str:
    """The feature-cache key: the model file's content and every setting that changes features."""
    from ..eval.embed import content_fingerprint  # lazy: start-up

    root = args.arcface_root or os.environ.get("ARCFACE_TORCH_ROOT") if args.network else None
    return content_fingerprint(args.model, network=args.network, onnx=bool(args.onnx), image_size=112,
                               arcface_root=os.path.abspath(root) if root else None)


def _run(args, command: str, key: str, data: str) -> dict:
    return {"command": command, "model": os.path.abspath(args.model), "key": key, "data": data}


def _embedder(args):
    from ..eval.embed import load_embedder, torch_embedder  # lazy: start-up

    trained = None if args.onnx else input_module_model(args.model, args.network, args.arcface_root)
    if trained is not None:
        return torch_embedder(trained, device=args.device)
    return load_embedder(args.model, network=args.network, onnx=args.onnx, device=args.device,
                         arcface_root=args.arcface_root)


def _roc_path(out: str, name: str) -> str:
    return os.path.join(out, f"roc_{name}.png")


def _verify(args) -> int:
    from ..eval import evaluate_verification  # lazy: start-up
    from ..eval.plots import plot_roc  # lazy: start-up
    from ..eval.report import check_results, out_file, verification_table, write_results  # lazy: start-up
    from ..fileio import derived, sha256_file  # lazy: start-up

    if not os.path.isfile(args.model):
        raise FileNotFoundError(f"{args.model}: model file not found")
    key = _model_key(args)
    names = [os.path.splitext(os.path.basename(p))[0] for p in args.bins]
    if len(set(names)) != len(names):
        raise ValueError(f"two verification sets share a name ({', '.join(names)}): their results would collide; "
                         "evaluate them into different --out folders")
    missing = [p for p in args.bins if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"verification set not found: {missing[0]}")
    runs = {n: _run(args, "eval verify", key, f"{os.path.abspath(p)} sha256:{sha256_file(p)}")
            for n, p in zip(names, args.bins)}
    results_path = os.path.join(args.out, "results.json")
    check_results(results_path, runs)
    embed = _embedder(args)
    results = {}
    for name, path in zip(names, args.bins):
        results[name] = evaluate_verification(embed, path, batch_size=args.batch_size, folds=args.folds,
                                              cache_dir=os.path.join(args.out, "features", name), cache_key=key)
    for name, res in results.items():  # the measured results first; the table and plots derive from them
        write_results(out_file(args.out, "results.json"), {name: res}, run=runs[name])
    print(derived("the table", lambda: verification_table(results), results=results_path) or "")
    print(f"wrote {results_path}")
    for name, res in results.items():
        png = derived("the ROC plot", lambda name=name, res=res: plot_roc(
            {name: (res["roc"]["fpr"], res["roc"]["tpr"])}, _roc_path(args.out, name),
            title=f"{name} verification ROC (cosine)"), results=results_path)
        if png:
            print(f"wrote {png}")
    return 0


def _ijb_data(root: str, target: str) -> str:
    from ..fileio import sha256_file  # lazy: start-up

    meta = [os.path.join(root, "meta", f"{target.lower()}_{k}.txt")
            for k in ("face_tid_mid", "name_5pts_score", "template_pair_label")]
    return os.path.abspath(root) + " " + " ".join(sha256_file(p)[:16] for p in meta if os.path.isfile(p))


def _ijb(args) -> int:
    from ..eval.plots import plot_roc  # lazy: start-up
    from ..eval.report import check_results, ijb_table, out_file, write_results  # lazy: start-up
    from ..fileio import derived  # lazy: start-up

    results_path = os.path.join(args.out, "results.json")
    if args.reference:
        from ..eval import metrics  # lazy: start-up
        from ..arcface_torch.reference import run_eval_ijbc  # lazy: start-up

        root = args.arcface_root or os.environ.get("ARCFACE_TORCH_ROOT")
        if not root or not args.network:
            raise ValueError("--reference needs an arcface_torch checkout (--arcface-root or ARCFACE_TORCH_ROOT) "
                             "and --network")
        if not os.path.isfile(args.model):
            raise FileNotFoundError(f"{args.model}: model file not found")
        name = f"{args.target}-reference"
        run = _run(args, "eval ijb --reference", _model_key(args), _ijb_data(args.root, args.target))
        check_results(results_path, {name: run})
        ref = run_eval_ijbc(root, args.model, args.network, args.root, args.target, args.out,
                            batch_size=args.batch_size, job="reference")
        res = {"target": args.target, "procedure": "arcface_torch eval_ijbc.py", "pairs": len(ref["scores"]),
               **metrics.tar_at_far(ref["labels"], ref["scores"], metrics.IJB_FARS),
               "arcface_torch": {"convention": metrics.ARCFACE_TORCH_IJB,
                                 "tar_at_far": metrics.tar_at_far_nearest(ref["fpr"], ref["tpr"])},
               "auc": metrics.auc(ref["fpr"], ref["tpr"]), "roc": {"fpr": ref["fpr"], "tpr": ref["tpr"]}}
    else:
        from ..eval import evaluate_ijb  # lazy: start-up

        if not os.path.isfile(args.model):
            raise FileNotFoundError(f"{args.model}: model file not found")
        key = _model_key(args)
        name = args.target
        run = _run(args, "eval ijb", key, _ijb_data(args.root, args.target))
        check_results(results_path, {name: run})
        embed = _embedder(args)
        res = evaluate_ijb(embed, args.root, args.target, batch_size=args.batch_size,
                           cache_dir=os.path.join(args.out, "features", args.target), cache_key=key,
                           workers=args.workers, identification=not args.no_1n)
    print(f"wrote {write_results(out_file(args.out, 'results.json'), {name: res}, run=run)}")
    if not args.reference:
        print(derived("the table", lambda: ijb_table(res), results=results_path) or "")
    png = derived("the ROC plot", lambda: plot_roc({name: (res["roc"]["fpr"], res["roc"]["tpr"])},
                                                   _roc_path(args.out, name), title=f"{args.target} 1:1 ROC"),
                  results=results_path)
    if png:
        print(f"wrote {png}")
    return 0


def register(subparsers) -> None:
    p = add_command(subparsers, "eval", "Evaluate a face recognition model (verification .bin, IJB-B/IJB-C).",
                    "  lh2face eval verify lfw.bin cfp_fp.bin --model work_dirs/r50/model.pt --network r50\n"
                    "  lh2face eval ijb /data/IJB_release/IJBC --target IJBC --model model.onnx --onnx",
                    lambda a: (p.print_help(), 0)[1])
    sub = p.add_subparsers(dest="eval_command", metavar="WHAT")
    v = add_command(sub, "verify", "10-fold accuracy, XNorm and TAR@FAR on arcface_torch .bin verification sets.",
                    "  lh2face eval verify lfw.bin --model model.pt --network r50 --out runs/lfw\n"
                    "  lh2face eval verify agedb_30.bin --model model.onnx --onnx --batch-size 256", _verify)
    v.add_argument("bins", nargs="+", metavar="BIN", help="verification set(s), e.g. lfw.bin")
    v.add_argument("--folds", type=int, default=10, help="cross-validation folds (default 10)")
    _model_args(v)
    j = add_command(sub, "ijb", "IJB-B / IJB-C 1:1 TAR@FAR (and 1:N TPIR@FPIR, rank-N when the CSVs exist).",
                    "  lh2face eval ijb /data/IJB_release/IJBC --target IJBC --model model.pt --network r100\n"
                    "  lh2face eval ijb out/ijb --target SYNTH --model model.onnx --onnx --out runs/synth\n"
                    "  lh2face eval ijb /data/IJB_release/IJBB --target IJBB --model model.pt --network r50 "
                    "--reference",
                    _ijb)
    j.add_argument("root", metavar="ROOT", help="folder holding meta/ and loose_crop/")
    j.add_argument("--target", default="IJBC", help="IJBB, IJBC or another prefix of the meta files (default IJBC)")
    j.add_argument("--workers", type=int, default=4, help="threads reading and aligning images (default 4)")
    j.add_argument("--no-1n", action="store_true", help="skip 1:N identification")
    j.add_argument("--reference", action="store_true",
                   help="run arcface_torch's own eval_ijbc.py in-process instead (needs the checkout and --network)")
    _model_args(j)
