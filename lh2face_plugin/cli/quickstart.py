"""``lh2face quickstart``: the main job on a fresh machine (CPU, minutes): ``lh2face bench``'s comparison at
the quickstart's preset, with its verify.bin, IJB-SYNTH and export steps (:mod:`lh2face_plugin.quickstart`)."""
from __future__ import annotations

from functools import partialmethod

from ..headspec import preset
from ._common import add_command, command_line


def config(args):
    """The :class:`~lh2face_plugin.bench.config.BenchConfig` of the parsed flags."""
    from ..quickstart import quickstart_config  # lazy: start-up (building the parser, lh2face --help, imports no numpy)

    return quickstart_config(out=args.out, identities=args.identities, images_per_id=args.images_per_id,
                             steps=args.steps, batch_size=args.batch_size, network=args.network, lr=args.lr,
                             clip=args.clip, heads=tuple(args.heads) if args.heads else None, device=args.device,
                             data_seed=args.seed, seeds=(args.train_seed,), families=args.eval_families,
                             workers=args.workers)


def run(args) -> int:
    from tqdm.auto import tqdm  # lazy: start-up

    from ..quickstart import run_quickstart  # lazy: start-up

    if args.quiet:
        tqdm.__init__ = partialmethod(tqdm.__init__, disable=True)
    run_quickstart(config(args), progress=not args.quiet, command=command_line("quickstart"))
    return 0


def register(subparsers) -> None:
    p = add_command(subparsers, "quickstart",
                    "synthetic data -> train lh2face, arcface and a scale-matched cosface -> evaluate -> "
                    "export a model-zoo pack",
                    """
  lh2face quickstart                                   # CPU, a few minutes, outputs in lh2face_runs/quickstart
  lh2face quickstart --steps 1000 --network compact    # a longer, larger run
  lh2face quickstart --heads lh2face cos24=cosface:s=24,m=0.35 --train-seed 1
  lh2face quickstart --device cuda --identities 1000 --steps 3000 --batch-size 256 --out runs/qs_gpu
A rerun with the same settings reuses the data, the trained models and the cached features.
One training seed cannot rank heads: 'lh2face bench' compares them with seeds and paired intervals.
""", run)
    p.add_argument("--out", default="lh2face_runs/quickstart", help="output folder (default: %(default)s)")
    p.add_argument("--identities", type=int, default=200, help="synthetic training identities (default: %(default)s)")
    p.add_argument("--images-per-id", type=int, default=20, help="images per identity (default: %(default)s)")
    p.add_argument("--steps", type=int, default=200, help="training steps per head (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="images per step (default: %(default)s)")
    p.add_argument("--network", default="compact-tiny", help="compact-tiny, compact or compact-wide (default: %(default)s)")
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate (default: %(default)s)")
    p.add_argument("--clip", default="scaled",
                   help="gradient clipping: scaled (0.1x the run's step-0 gradient norm), off or a fixed max norm "
                        "(default: %(default)s)")
    p.add_argument("--heads", nargs="+", metavar="SPEC",
                   help="head specs [LABEL=]NAME[:k=v,...]; the first is exported "
                        f"(default: lh2face arcface {preset('cosface-s24')})")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the training data (default: %(default)s)")
    p.add_argument("--train-seed", type=int, default=0,
                   help="seed of initialisation and batch order, the same for every head (default: %(default)s)")
    p.add_argument("--eval-families", type=int, default=40,
                   help="look-alike families of the held-out hard-HQ set (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="DataLoader worker processes (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
