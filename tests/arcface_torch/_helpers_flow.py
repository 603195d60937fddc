"""Runs arcface_torch's real train_v2 flow on the CPU (a subprocess of test_train_flow.py).

usage: python _helpers_flow.py CHECKOUT WORKDIR

1. ``lh2face train`` way: recipe outside configs/, 1 epoch, save_all_states.
2. the same, resumed for a 2nd epoch (config.resume = True).
   Then the render input module from a reconstruction checkpoint, frozen and joint.
3. explicit stock way: deactivated, then ``train_v2.main`` on ``configs/lh2face_smoke`` (a recipe inside
   the checkout that calls set_loss), which must activate the plugin through the recipe import.
   (The start-up hook's route, a bare ``config.loss`` under torchrun, is test_stock_command.py.)
Writes WORKDIR/result.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap

import torch

RECIPE = """
    import os
    from lh2face_plugin.arcface_torch.activate import new_config, set_loss

    config = new_config()
    config.network = "mbf"
    config.resume = {resume}
    config.save_all_states = True
    config.output = {output!r}
    config.embedding_size = 32
    config.sample_rate = {rate}
    config.fp16 = False
    config.batch_size = 4
    config.lr = 0.01
    config.verbose = 10 ** 9
    config.frequent = 1
    config.num_workers = 0
    config.rec = {rec!r}
    config.num_classes = 8
    config.num_image = 8
    config.num_epoch = {epochs}
    config.warmup_epoch = 0
    config.val_targets = []
    set_loss(config, "lh2face", kappa_min=2.0, kappa_max=12.0, vmf_dim=32)
"""


def write(path: str, extra: str = "", **fields) -> str:
    with open(path, "w") as f:
        f.write(textwrap.dedent(RECIPE.format(**fields)) + extra)
    return path


def render_run(workdir: str, images: str, mode: str, checkout: str) -> dict:
    """Train with the render input module from a reconstruction checkpoint; compare the saved
    model's reconstruction weights with the checkpoint's."""
    from lh2face_plugin.arcface_torch.train import run
    from lh2face_plugin.render.module import RenderInputModule

    ckpt = os.path.join(workdir, "render.pt")
    if not os.path.exists(ckpt):
        torch.manual_seed(0)
        RenderInputModule(width=8).save_reconstruction(ckpt)
    out = os.path.join(workdir, f"render_{mode}")
    extra = ("from lh2face_plugin.arcface_torch.activate import set_input_module\n"
             f"set_input_module(config, 'render', checkpoint={ckpt!r}, mode={mode!r}, width=8, canon_fraction=0.5)\n")
    run(write(os.path.join(workdir, f"render_{mode}.py"), extra, resume=False, output=out, rate=1.0, rec=images,
              epochs=1), arcface_root=checkout, strict=True, cpu=True, quiet=True)
    saved = torch.load(os.path.join(out, "model.pt"), weights_only=True)
    start = torch.load(ckpt, weights_only=True)["state_dict"]
    net = {k[len("render.net."):]: v for k, v in saved.items() if k.startswith("render.net.")}
    return dict(losses=losses(out), keys=sorted(net) == sorted(start),
                unchanged=all(torch.equal(net[k], v) for k, v in start.items() if k in net))


def checkpoint(output: str) -> dict:
    ckpt = torch.load(os.path.join(output, "checkpoint_gpu_0.pt"), weights_only=True)
    fc = ckpt["state_dict_softmax_fc"]
    return dict(epoch=ckpt["epoch"], global_step=ckpt["global_step"], keys=sorted(fc),
                tracked=int(fc.get("margin_softmax.num_batches_tracked", torch.tensor(-1))))


def losses(output: str) -> list:
    out = []
    with open(os.path.join(output, "training.log")) as f:
        for line in f:
            if "Loss " in line:
                out.append(float(line.split("Loss ")[1].split()[0]))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("checkout")
    p.add_argument("workdir")
    a = p.parse_args()
    from lh2face_plugin.arcface_torch import activate as act
    from lh2face_plugin.arcface_torch.compat import cpu_only
    from lh2face_plugin.arcface_torch.smoke import random_image_folder
    from lh2face_plugin.arcface_torch.train import run

    images = random_image_folder(os.path.join(a.workdir, "images"), num_classes=8)
    out1 = os.path.join(a.workdir, "way1")
    result = {}
    run(write(os.path.join(a.workdir, "first.py"), resume=False, output=out1, rate=1.0, rec=images, epochs=1),
        arcface_root=a.checkout, strict=True, cpu=True, quiet=True)
    result["first"] = dict(checkpoint(out1), losses=losses(out1))
    run(write(os.path.join(a.workdir, "resume.py"), resume=True, output=out1, rate=1.0, rec=images, epochs=2),
        arcface_root=a.checkout, strict=True, cpu=True, quiet=True)
    result["resumed"] = dict(checkpoint(out1), losses=losses(out1))
    for mode in ("frozen", "joint"):
        result[f"render_{mode}"] = render_run(a.workdir, images, mode, a.checkout)

    trainer = sys.modules["train_v2"]
    act.deactivate(trainer)
    result["inactive_before_stock"] = not act.is_active(trainer)
    out3 = os.path.join(a.workdir, "way2")
    write(os.path.join(a.checkout, "configs", "lh2face_smoke.py"), resume=False, output=out3, rate=0.5, rec=images,
          epochs=1)
    os.chdir(a.checkout)
    init_method = "file://" + os.path.join(tempfile.mkdtemp(dir=a.workdir), "store")
    torch.distributed.init_process_group("gloo", init_method=init_method, rank=0, world_size=1)
    with cpu_only(sys.modules.get("utils.utils_distributed_sampler")):
        trainer.main(argparse.Namespace(config="configs/lh2face_smoke"))
    torch.distributed.destroy_process_group()
    result["stock"] = dict(checkpoint(out3), losses=losses(out3), active=act.is_active(trainer))
    with open(os.path.join(a.workdir, "result.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
