"""``lh2face data``: build, inspect, shuffle and synthesise RecordIO face datasets."""
from __future__ import annotations

import os

from ._common import add_command

OVERWRITE_HELP = ("write into a non-empty folder this command did not make (replaces only the files of the same "
                  "names, keeps the others)")


def _build(args) -> int:
    from ..data.tools import build_dataset  # lazy: start-up

    res = build_dataset(args.image_folder, args.out, landmarks=args.landmarks, image_size=args.size,
                        resize=args.resize, quality=args.quality, progress=not args.quiet,
                        overwrite=args.overwrite)
    print(f"{res['num_images']} images of {res['num_classes']} identities")
    for key in ("rec", "idx", "property", "classes"):
        print(f"{key:<9}{res[key]}")
    return 0


def _inspect(args) -> int:
    from ..data.tools import inspect_record  # lazy: start-up

    sheet = None
    if not args.no_sheet:
        stem = os.path.splitext(os.path.basename(args.rec.rstrip("/\\")))[0]
        sheet = args.sheet or f"{stem}_sheet.png"
    summary = inspect_record(args.rec, sheet=sheet, samples=args.samples, seed=args.seed, progress=not args.quiet,
                             strict=args.strict)
    print(summary.format())
    return 1 if summary.integrity or (summary.problems and args.strict) else 0


def _shuffle(args) -> int:
    from ..data.tools import shuffle_record  # lazy: start-up

    res = shuffle_record(args.rec, args.out, seed=args.seed, progress=not args.quiet, overwrite=args.overwrite)
    print(f"{res['num_images']} image records shuffled (seed {args.seed})")
    for key in ("rec", "idx", "property"):
        if key in res:
            print(f"{key:<9}{res[key]}")
    return 0


def _synth(args) -> int:
    from ..data.synthetic import generate_dataset  # lazy: start-up

    sizes = {k: getattr(args, k) for k in ("eval_identities", "verify_pairs", "render_eval")
             if getattr(args, k) is not None}
    paths = generate_dataset(args.out, identities=args.identities, images_per_id=args.images_per_id,
                             seed=args.seed, overwrite=args.overwrite, **sizes)
    width = max(map(len, paths), default=0) + 2
    for key, path in paths.items():
        print(f"{key:<{width}}{path}")
    return 0


def register(subparsers) -> None:
    p = add_command(subparsers, "data", "build, inspect, shuffle or synthesise RecordIO face datasets (no mxnet)", """
  lh2face data build faces/ data/mine                  # faces/<identity>/*.jpg, already 112x112 aligned
  lh2face data build raw/ data/mine --landmarks lmk.csv  # align with 5 points: path,x1,y1,...,x5,y5
  lh2face data inspect data/mine --sheet sheet.png      # counts, classes, labels, contact sheet
  lh2face data shuffle data/mine data/mine_dali        # image records only, shuffled, for DALI
  lh2face data synth data/synth --identities 200 --images-per-id 20 --seed 0
""", None)
    p.set_defaults(func=lambda args: p.print_help() or 0)
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")

    b = add_command(sub, "build", "pack IMAGE_FOLDER/<identity>/<image> into OUT/train.rec, train.idx, property",
                    """
  lh2face data build faces/ data/mine
  lh2face data build raw/ data/mine --landmarks lmk.csv --quality 95
  lh2face data build faces_128/ data/mine --resize
""", _build)
    b.add_argument("image_folder", help="one sub-folder per identity (class = sorted folder order)")
    b.add_argument("out", help="output folder (created; built aside and swapped in whole)")
    b.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    b.add_argument("--landmarks", metavar="CSV",
                   help="CSV 'relative_path,x1,y1,...,x5,y5' (eyes, nose, mouth corners): align with "
                        "insightface's norm_crop")
    b.add_argument("--size", type=int, default=112, help="output image size in pixels (default 112)")
    b.add_argument("--resize", action="store_true", help="resize images of another size instead of failing")
    b.add_argument("--quality", type=int, default=95, help="JPEG quality for re-encoded images (default 95)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")

    i = add_command(sub, "inspect", "counts, classes, label layout and a contact sheet of a .rec", """
  lh2face data inspect data/mine                    # writes train_sheet.png in the current folder
  lh2face data inspect data/mine/train.rec --sheet /tmp/s.png --samples 64
  lh2face data inspect data/mine --no-sheet --strict  # decode every image; exit 1 when problems are found
Exit status 1 when the .rec is damaged or truncated, or the .idx does not match it (always), or, with --strict,
for any problem (images that do not decode, labels, property).
""", _inspect)
    i.add_argument("rec", help="a .rec file or a folder holding train.rec")
    i.add_argument("--sheet", metavar="PNG", help="contact sheet path (default <stem>_sheet.png)")
    i.add_argument("--no-sheet", action="store_true", help="do not draw a contact sheet")
    i.add_argument("--samples", type=int, default=36, help="images on the sheet (default 36)")
    i.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    i.add_argument("--strict", action="store_true",
                   help="decode every image (not only the sampled ones) and exit with status 1 if any problem is "
                        "found (without it: only for a damaged .rec or a mismatched .idx)")
    i.add_argument("--quiet", action="store_true", help="no progress bar")

    s = add_command(sub, "shuffle", "shuffled copy with image records only (scalar labels) for DALI", """
  lh2face data shuffle data/mine data/mine_dali
  lh2face data shuffle data/mine/train.rec data/mine_dali --seed 1
""", _shuffle)
    s.add_argument("rec", help="a .rec file (with its .idx) or a folder holding train.rec")
    s.add_argument("out", help="output folder for train.rec / train.idx (created)")
    s.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    s.add_argument("--seed", type=int, default=0, help="permutation seed (default 0)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")

    y = add_command(sub, "synth", "generate a synthetic 3D-face dataset (train.rec, verify.bin, IJB-style set)",
                    """
  lh2face data synth data/synth
  lh2face data synth data/synth --identities 1000 --images-per-id 20 --seed 0
  lh2face data synth my_folder --overwrite             # my_folder holds other files: they are kept
A rerun with the same settings checks the files (sizes, SHA-256) and reuses them when whole.
""", _synth)
    y.add_argument("out", help="output folder")
    y.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    y.add_argument("--identities", type=int, default=100, help="number of identities (default 100)")
    y.add_argument("--images-per-id", type=int, default=10, help="training images per identity (default 10)")
    y.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    y.add_argument("--eval-identities", type=int, help="identities of verify.bin and ijb/ (default identities/4, "
                                                       "within 20..500)")
    y.add_argument("--verify-pairs", type=int, help="pairs in verify.bin (default identities rounded to 20, "
                                                    "within 200..3000)")
    y.add_argument("--render-eval", type=int, help="faces in render_eval.npz (default 128)")
