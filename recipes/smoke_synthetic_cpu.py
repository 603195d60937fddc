"""Synthetic CPU smoke run: checks the wiring (checkout, activation, head, Partial FC, save) in seconds.

Dataset: 16 classes x 1 random 112x112 image, written once to $TMPDIR/lh2face_smoke_images in
arcface_torch's ImageFolder layout (its own rec="synthetic" repeats one image, which batch
norm turns into NaN after a step, whatever the loss). Expected run: 2 epochs of 4 steps of
4 images on the CPU with MobileFaceNet; a finite loss in work_dirs/smoke_synthetic_cpu/
training.log, plus model.pt and checkpoint_gpu_0.pt there. Run it again with
config.resume = True to resume from the checkpoint.

    lh2face train recipes/smoke_synthetic_cpu.py --cpu
"""
import os
import tempfile

from lh2face_plugin.arcface_torch.activate import new_config, set_loss
from lh2face_plugin.arcface_torch.smoke import random_image_folder

config = new_config()
config.network = "mbf"
config.resume = False
config.save_all_states = True
config.output = None
config.embedding_size = 128
config.sample_rate = 1.0
config.fp16 = False
config.batch_size = 4
config.lr = 0.01
config.verbose = 10 ** 9
config.frequent = 1
config.num_workers = 0
config.dali = False

config.rec = random_image_folder(os.path.join(tempfile.gettempdir(), "lh2face_smoke_images"), num_classes=16)
config.num_classes = 16
config.num_image = 16
config.num_epoch = 2
config.warmup_epoch = 0
config.val_targets = []

set_loss(config, "lh2face", alpha=0.35, kappa_min=16.0, kappa_max=64.0, vmf_dim=128)
