"""Fake arcface_torch checkouts and trainers for tests that run without the real one."""
from __future__ import annotations

import os
import sys
import textwrap

from lh2face_plugin.arcface_torch.locate import REQUIRED_FILES

HOST_MODULES = ("train_v2", "partial_fc_v2", "losses", "lr_scheduler", "dataset", "backbones", "utils",
                "utils.utils_config", "configs", "configs.base")

FAKE_SOURCES = {
    "partial_fc_v2.py": """
        import torch

        class PartialFC_V2(torch.nn.Module):
            def __init__(self, margin_loss, embedding_size, num_classes, sample_rate=1.0, fp16=False):
                super().__init__()
                self.margin_softmax = margin_loss
                self.embedding_size, self.sample_rate, self.fp16 = embedding_size, sample_rate, fp16
                self.rank, self.world_size = 0, 1
                self.num_local, self.class_start = num_classes, 0
                self.weight = torch.nn.Parameter(torch.zeros(num_classes, embedding_size))

        def AllGather(tensor, *parts):
            return (tensor,)
    """,
    "losses.py": """
        class CombinedMarginLoss:
            def __init__(self, s, m1, m2, m3, interclass_filtering_threshold=0):
                self.args = (s, m1, m2, m3, interclass_filtering_threshold)
    """,
    "lr_scheduler.py": """
        from torch.optim.lr_scheduler import _LRScheduler

        class PolynomialLRWarmup(_LRScheduler):
            def __init__(self, optimizer, warmup_iters, total_iters=5, power=1.0, last_epoch=-1, verbose=False):
                super().__init__(optimizer, last_epoch=last_epoch, verbose=verbose)
                self.total_iters, self.power, self.warmup_iters = total_iters, power, warmup_iters

            def get_lr(self):
                return [group["lr"] for group in self.optimizer.param_groups]
    """,
    "backbones/__init__.py": """
        import torch

        def get_model(name, **kwargs):
            return torch.nn.Linear(4, kwargs.get("num_features", 8))
    """,
    "dataset.py": """
        def get_dataloader(root_dir, local_rank, batch_size, *args):
            return [(i, i) for i in range(10)]
    """,
    "utils/__init__.py": "",
    "utils/utils_config.py": """
        def get_config(config_file):
            assert config_file.startswith("configs/")
            return {"stock": config_file}
    """,
    "configs/__init__.py": "",
    "configs/base.py": """
        config = dict(network="r50", embedding_size=512, sample_rate=1, margin_list=(1.0, 0.5, 0.0), output=None)
    """,
    "train_v2.py": """
        from backbones import get_model
        from dataset import get_dataloader
        from losses import CombinedMarginLoss
        from lr_scheduler import PolynomialLRWarmup
        from partial_fc_v2 import PartialFC_V2
        from utils.utils_config import get_config

        def main(args):
            return get_config(args.config)
    """,
}


def write_fake_checkout(root: str, files=REQUIRED_FILES) -> str:
    """A folder with ``files`` (fake but importable contents where known); returns ``root``."""
    for rel in files:
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(textwrap.dedent(FAKE_SOURCES.get(rel, "# placeholder\n")))
    for rel in ("utils/__init__.py", "configs/__init__.py"):
        path = os.path.join(root, rel)
        if not os.path.exists(path):
            open(path, "w").close()
    return root


def forget_host_modules() -> None:
    for name in list(sys.modules):
        if name in HOST_MODULES or name.startswith(("configs.", "utils.", "backbones.")):
            del sys.modules[name]


def write_recipe(path: str, body: str) -> str:
    with open(path, "w") as f:
        f.write(textwrap.dedent(body))
    return path


# A host whose train_v2.py runs as a script, as under torchrun: get_config imports configs.<name> like
# arcface_torch's, dataset.py imports mxnet and torchvision at the top, and the trainer asks for NCCL.
STOCK_SOURCES = dict(FAKE_SOURCES, **{
    "dataset.py": """
        import mxnet as mx
        from torchvision import transforms
        from torchvision.datasets import ImageFolder

        def get_dataloader(root_dir, local_rank, batch_size, *args):
            return [(i, i) for i in range(10)]
    """,
    "utils/utils_config.py": """
        import importlib
        import os.path as osp

        def get_config(config_file):
            assert config_file.startswith("configs/")
            cfg = dict(importlib.import_module("configs.base").config)
            cfg.update(importlib.import_module("configs." + osp.splitext(osp.basename(config_file))[0]).config)
            return cfg
    """,
    "train_v2.py": """
        import json
        import os
        import sys
        import tempfile

        import torch
        from backbones import get_model
        from dataset import get_dataloader
        from losses import CombinedMarginLoss
        from lr_scheduler import PolynomialLRWarmup
        from partial_fc_v2 import PartialFC_V2
        from torch import distributed
        from utils.utils_config import get_config

        distributed.init_process_group("nccl", init_method="file://" + os.path.join(tempfile.mkdtemp(), "s"),
                                       rank=0, world_size=1)

        def main(config_file):
            cfg = get_config(config_file)
            margin = CombinedMarginLoss(64, *cfg["margin_list"], 0)
            import mxnet, torchvision
            act = sys.modules[__name__].__dict__.get("lh2face_activation")
            print(json.dumps({"head": type(margin).__name__, "backend": distributed.get_backend(),
                              "mxnet": mxnet.__version__, "torchvision": torchvision.__version__,
                              "torchvision_origin": getattr(torchvision.__spec__, "origin", None),
                              "active": act is not None, "source": getattr(act, "source", None)}))

        if __name__ == "__main__":
            main(sys.argv[1])
    """,
})


def write_stock_checkout(root: str) -> str:
    """A fake checkout whose ``train_v2.py`` runs as a script (see ``STOCK_SOURCES``); returns ``root``."""
    write_fake_checkout(root)
    for rel, text in STOCK_SOURCES.items():
        with open(os.path.join(root, rel), "w") as f:
            f.write(textwrap.dedent(text))
    return root
