"""``lh2face bench``: heads trained alike, compared on held-out look-alike faces with paired CIs."""
from __future__ import annotations

from functools import partialmethod

from ._common import add_command, command_line

_DEFAULT_CONTROL = "default"
_SCALE_NAMES = ("toy", "cpu", "gpu")
"""The keys of lh2face_plugin.bench.config.SCALES, named here so that ``--help`` imports nothing."""


def run(args) -> int:
    from tqdm.auto import tqdm  # lazy: start-up (building the parser, lh2face --help, imports no numpy)

    from .. import bench  # lazy: start-up
    from ..bench.config import SCALES  # lazy: start-up

    if args.quiet:
        tqdm.__init__ = partialmethod(tqdm.__init__, disable=True)
    if args.list_defaults:
        print("\n".join(bench.DEFAULT_HEADS))
        return 0
    if args.list_scales:
        for name, s in SCALES.items():
            print(f"{name}: --network {s['network']} --steps {s['steps']} --batch-size {s['batch_size']} "
                  f"--identities {s['identities']}")
        return 0
    if args.report is not None:
        if args.heads or args.control:
            raise ValueError("--report rebuilds the table of the runs stored in OUT and trains nothing; "
                             "drop --heads/--control (run lh2face bench --out OUT --heads ... to add runs)")
        bench.rebuild_report(args.report, reference=args.reference, device=args.device, progress=not args.quiet,
                             wait=args.wait)
        return 0
    control = bench.CONTROL_HEAD if args.control == _DEFAULT_CONTROL else args.control
    cfg = bench.BenchConfig.at_scale(
        args.scale, out=args.out, heads=tuple(args.heads) if args.heads else bench.DEFAULT_HEADS,
        reference=args.reference, seeds=tuple(args.seeds), budget=args.budget, steps=args.steps,
        batch_size=args.batch_size, network=args.network, lr=args.lr, clip=args.clip,
        lr_sweep=tuple(args.lr_sweep or ()), sweep_metric=args.sweep_metric, identities=args.identities,
        images_per_id=args.images_per_id, data_seed=args.data_seed, families=args.families, eval_seed=args.eval_seed,
        val_families=args.val_families, val_seed=args.val_seed, bootstrap=args.bootstrap, device=args.device,
        workers=args.workers, control=control)
    bench.run(cfg, progress=not args.quiet, command=command_line("bench"), wait=args.wait)
    return 0


def register(subparsers) -> None:
    p = add_command(subparsers, "bench",
                    "train several heads x training seeds alike; compare them on held-out look-alike faces "
                    "(hard-HQ TAR@FAR, paired bootstrap CIs over families, seed spread)",
                    """
  lh2face bench                                     # the default comparison (CPU; its time: docs page below)
  lh2face bench --budget 0.2 --out runs/bench_smoke # a fifth of the steps
  lh2face bench --scale cpu --control               # 1500 steps, 600 identities: about 53 min on 2 CPU cores
  lh2face bench --heads arcface cos24=cosface:s=24,m=0.35 lh2face lh2face-ps=lh2face:margin=per_sample \\
                --reference cos24 --seeds 0 1 2
  lh2face bench --lr-sweep 0.05 0.1 0.2             # pick each head's learning rate on a validation set first
  lh2face bench --scale gpu --device cuda --workers 8 --budget 2
  lh2face bench --control                           # also train the positive control (CosFace s=24, m=0)
  lh2face bench --heads lh2face-ps=lh2face:margin=per_sample   # adds a row: the stored runs are not retrained
  lh2face bench --report lh2face_runs/bench         # rebuild results.json, the table and plots; no training
  lh2face render pretrain --steps 1000 --pool 2048 --out render.pt   # then: lh2face with the render input
  lh2face bench --heads lh2face lh2face-r=lh2face@render:checkpoint=render.pt,mode=frozen,canon_fraction=0.125
Head specs: [LABEL=]NAME[:key=value,...][@MODULE[:key=value,...]][#NETWORK] (lh2face heads lists names and
parameters; @render trains the backbone behind the render input module; #NETWORK trains this head on another
backbone than --network, e.g. #compact-tiny-matched, a compute-matched baseline); the label names the row and the run folder
OUT/<label>/seed<k>/model.pt (evaluate it with lh2face eval ... --network compact-tiny; a @render run's
model.pt holds the wrapped model, render.* and backbone.*, and lh2face eval rebuilds it from its train.json).
A rerun with the same settings reuses the data, evaluation set, trained models and features. Every run's
result is stored under its key in OUT/runs.json; the table gathers every stored run of the same training
settings (seed and lr aside), data and evaluation set, so --heads selects what to train, not what to show.
The report states the smallest difference at hard-HQ TAR@1e-2 and 1e-1 the run could have called a win.
""", run)
    p.add_argument("--out", default="lh2face_runs/bench", help="output folder (default: %(default)s)")
    p.add_argument("--heads", nargs="+", metavar="SPEC",
                   help="head specs to compare (default: --list-defaults; unregistered default heads are skipped)")
    p.add_argument("--list-defaults", action="store_true", help="print the default head specs and exit")
    p.add_argument("--control", nargs="?", const=_DEFAULT_CONTROL, default=None, metavar="SPEC",
                   help="also train a positive control, a head with a known handicap, and report its difference "
                        "from the reference (default SPEC: lh2face_plugin.bench.CONTROL_HEAD, "
                        "control=cosface:s=24,m=0: plain normalised softmax at the reference's scale)")
    p.add_argument("--report", metavar="OUT", default=None,
                   help="rebuild OUT's results.json, table and plots from its stored runs, without training")
    p.add_argument("--reference", default=None, help="label of the head differences are taken against "
                                                     "(default: the earlier table's, else the first head)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="training seeds (default: 0 1)")
    p.add_argument("--scale", default="toy",
                   help=f"preset of --network, --steps, --batch-size and --identities, each overridable: "
                        f"{', '.join(_SCALE_NAMES)} (--list-scales prints them; default: %(default)s)")
    p.add_argument("--list-scales", action="store_true", help="print the --scale presets and exit")
    p.add_argument("--budget", type=float, default=1.0, help="multiplies --steps (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="training steps per run before --budget "
                                                           "(default: the --scale's)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default: the --scale's)")
    p.add_argument("--network", default=None, help="compact-tiny, compact or compact-wide "
                                                   "(default: the --scale's)")
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate of every head without --lr-sweep "
                                                         "(default: %(default)s)")
    p.add_argument("--lr-sweep", nargs="+", type=float, metavar="LR",
                   help="learning rates to try for every head (first seed) on a validation set; each head then "
                        "trains with its best")
    p.add_argument("--sweep-metric", default="hard_hq_tar@1e-1", help="validation metric of the sweep "
                                                                      "(default: %(default)s)")
    p.add_argument("--clip", default="scaled",
                   help="gradient clipping: scaled (0.1x the run's step-0 gradient norm, proportional to the head's "
                        "logit scale), off, or a fixed max norm (default: %(default)s)")
    p.add_argument("--identities", type=int, default=None, help="training identities (default: the --scale's)")
    p.add_argument("--images-per-id", type=int, default=20, help="images per training identity "
                                                                 "(default: %(default)s)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the training data (default: %(default)s)")
    p.add_argument("--families", type=int, default=120, help="look-alike families in the evaluation set "
                                                             "(default: %(default)s)")
    p.add_argument("--eval-seed", type=int, default=1, help="seed of the evaluation set (default: %(default)s)")
    p.add_argument("--val-families", type=int, default=40, help="families of the sweep's validation set "
                                                                "(default: %(default)s)")
    p.add_argument("--val-seed", type=int, default=2, help="seed of the validation set (default: %(default)s)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="DataLoader worker processes (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--wait", action="store_true",
                   help="if another lh2face bench is writing OUT, wait for it to finish (default: stop at once)")
