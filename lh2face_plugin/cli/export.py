"""``lh2face export``: ONNX export and an insightface model-zoo pack."""
from __future__ import annotations

import os

from ..finite import require_finite_parameters
from ._common import add_command, input_module_model


def run(args) -> int:
    from ..fileio import writer_lock  # lazy: start-up (fileio imports numpy)

    with writer_lock(os.path.abspath(args.out), "export", wait=args.wait, on_wait=print):
        return _run(args)


def _run(args) -> int:
    from ..export.modelzoo import (RECOGNITION_FILE, fill_pack, inspect_recognition_onnx, verify_pack,
                                   writing_pack)  # lazy: start-up
    from ..export.onnx import check_onnx, export_onnx  # lazy: start-up

    out = os.path.abspath(args.out)
    model_id = args.model_id or os.path.basename(out.rstrip(os.sep))
    module = input_module_model(args.model, args.network, args.arcface_root)
    if module is None and not args.model.lower().endswith(".onnx"):
        from ..backbones import load_backbone  # lazy: start-up

        if not args.network:
            raise ValueError("--network is required for a torch checkpoint (e.g. r50, r100, mbf, compact)")
        extra = {"width": args.width} if args.width else {}
        module = load_backbone(
            args.model, args.network, arcface_root=args.arcface_root, embedding_size=args.embedding_size, **extra
        )
        require_finite_parameters(module, args.model)
    with writing_pack(out, overwrite=args.overwrite) as stage:
        if module is None:
            shape = inspect_recognition_onnx(args.model)["input_shape"]
            _, _, dynamic = check_onnx(args.model, None, batch_sizes=(1,) if isinstance(shape[0], int) else (1, 8))
            print(f"onnx      {args.model} (already exported; dynamic batch: {'yes' if dynamic else 'NO'})")
            recognition = args.model
        else:
            report = export_onnx(module, os.path.join(stage, RECOGNITION_FILE), opset=args.opset,
                                 input_name=args.input_name)
            recognition = report.path
            report.path = os.path.join(out, RECOGNITION_FILE)
            print(report.summary())
        pack = fill_pack(recognition, stage, model_id=model_id, detector=args.detector, license_file=args.license)
        if not args.no_verify:
            result = verify_pack(stage, reference=module)
            worst = min(result["cosine"].values())
            if not worst >= 0.9999:
                raise RuntimeError(f"insightface's embedding of the pack disagrees with the model (min cosine "
                                   f"{worst:.6f} < 0.9999: {result['cosine']}); {out} was not written")
    print(f"manifest  {os.path.join(out, 'manifest.json')} (model_id {pack.manifest['model_id']!r}, "
          f"tasks: {', '.join(sorted(pack.files))})")
    if args.no_verify:
        return 0
    print(f"insightface: routed to {result['routed']['manifest']} (manifest) / {result['routed']['shape']} (shape), "
          f"mean/std {result['mean_std']['manifest']}")
    for name, value in result["cosine"].items():
        print(f"cosine {name:<22} {value:.7f}")
    print(f"FaceAnalysis: {result['face_analysis']}")
    return 0


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "export",
        "export a backbone to ONNX and write an insightface model-zoo pack (manifest V2)",
        """
  lh2face export work_dirs/ms1mv3_r50/model.pt --network r50 --arcface-root ~/insightface/recognition/arcface_torch --out packs/r50_lh2face
  lh2face export model.pt --network compact --out packs/compact --detector ~/.insightface/models/buffalo_l/det_10g.onnx
  lh2face export exported.onnx --out packs/mine --model-id mine      # pack an ONNX you already have
  # then in Python: insightface.app.FaceAnalysis(name="packs/r50_lh2face")  (needs --detector)
""",
        run,
    )
    p.add_argument("model", help="arcface_torch model.pt / checkpoint_gpu_0.pt, one of ours, or an .onnx")
    p.add_argument("--out", required=True,
                   help="pack folder to write (recognition.onnx, manifest.json), all or nothing; new, empty, or a "
                        "pack this command wrote")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty folder this command did not make (replaces only the files of the "
                        "same names, keeps the others)")
    p.add_argument("--network", help="network of a .pt: arcface_torch's (r18, r50, r100, mbf, vit_t, ...) or ours "
                                     "(compact, ...); not needed for a run trained behind an input module (its "
                                     "train.json or lh2face_input_module.json beside model.pt names it)")
    p.add_argument("--arcface-root", help="arcface_torch checkout for its networks (default: $ARCFACE_TORCH_ROOT)")
    p.add_argument("--embedding-size", type=int, help="D (default: read from the checkpoint)")
    p.add_argument("--width", type=int, help="width of our compact network, if not its preset's")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, >= 17 (default: 18)")
    p.add_argument("--input-name", default="input.1", help="graph input name (default: input.1)")
    p.add_argument("--model-id", help="manifest model_id (default: the --out folder's name)")
    p.add_argument("--detector", help="a detector .onnx to include, e.g. SCRFD's det_10g.onnx (FaceAnalysis needs one)")
    p.add_argument("--license", help="file copied to MODEL.LICENSE")
    p.add_argument("--no-verify", action="store_true", help="skip the insightface round trip")
    p.add_argument("--wait", action="store_true",
                   help="if another lh2face export is writing --out, wait for it to finish (default: stop at once)")
