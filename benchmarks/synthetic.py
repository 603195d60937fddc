"""Synthetic face generation speed, as ratios to the single-image path measured in the same run.

Baseline: :func:`lh2face_plugin.data.synthetic.render_face` called once per image (it
decodes the identity's maps and renders the image and its frontal view each call).
Rows, all on the same identities and random views of the training distribution:

- ``render_batch``: the vectorised renderer on batches of 32 views (maps decoded once per
  identity chunk), no degradation or encoding;
- ``train job``: what a dataset worker does per chunk (render, degrade, JPEG-encode);
- ``generate_dataset``: the whole dataset writer (training RecordIO, verify.bin, IJB crops,
  render_eval.npz) with ``--workers`` processes, per written image.

Times are wall-clock (``ms/img``) and CPU time of this process and its workers
(``cpu ms/img``); ratio = baseline wall ms/img / row wall ms/img (> 1: faster). On a busy
machine wall time exceeds CPU time; CPU time / cores is what a free machine needs.

    python benchmarks/synthetic.py                                  # 50 identities x 20 images
    python benchmarks/synthetic.py --identities 1000 --images-per-id 20 --workers 2
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

from lh2face_plugin.data import face3d, synthetic
from lh2face_plugin.data.synthetic.plans import train_views
from lh2face_plugin.data.synthetic.runner import make_jobs, run_job
from lh2face_plugin.data.synthetic.views import render_views


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn):
    w, c = time.perf_counter(), _cpu()
    fn()
    return time.perf_counter() - w, _cpu() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--identities", type=int, default=50)
    ap.add_argument("--images-per-id", type=int, default=20)
    ap.add_argument("--baseline-images", type=int, default=64, help="images rendered one by one")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    ids = synthetic.make_identities(args.identities, args.seed)
    views = train_views(ids, args.images_per_id, args.seed)
    rows = []

    nb = min(args.baseline_images, views.n)

    def baseline():
        for i in range(nb):
            synthetic.render_face(ids[int(views.ident[i])], views.yaw[i], views.pitch[i], views.roll[i],
                                  light=views.light(i), expression=views.expression[i],
                                  degrade=views.degradation[i], seed=i)

    wall, cpu = _timed(baseline)
    rows.append(("render_face per image (baseline)", nb, wall, cpu))

    jobs = list(make_jobs(ids, views, 112, "jpeg", 128))

    def batched():
        for job in jobs:
            maps = face3d.build_maps(job["params"])
            render_views(maps, job["views"])

    wall, cpu = _timed(batched)
    rows.append(("render_batch, batches of 32", views.n, wall, cpu))

    def train_jobs():
        for job in jobs:
            run_job(job)

    wall, cpu = _timed(train_jobs)
    rows.append(("train job (render+degrade+JPEG)", views.n, wall, cpu))

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "set")
        wall, cpu = _timed(lambda: synthetic.generate_dataset(
            out, args.identities, args.images_per_id, args.seed, workers=args.workers, progress=False))
        with open(os.path.join(out, "meta.json")) as f:
            counts = json.load(f)["counts"]
        total = counts["train_images"] + 2 * counts["verify_pairs"] + counts["ijb_images"] + 2 * counts["render_eval"]
        rows.append((f"generate_dataset, {args.workers} worker(s)", total, wall, cpu))

    base = rows[0][2] / rows[0][1]
    print(f"{args.identities} identities x {args.images_per_id} images, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'row':40s} {'images':>7s} {'wall s':>8s} {'ms/img':>8s} {'cpu ms/img':>11s} {'ratio':>7s}")
    for name, n, wall, cpu in rows:
        print(f"{name:40s} {n:7d} {wall:8.2f} {1000 * wall / n:8.2f} {1000 * cpu / n:11.2f} {base / (wall / n):7.2f}")


if __name__ == "__main__":
    main()
