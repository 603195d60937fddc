"""Glint360K, IResNet-100, LH2Face.

Dataset: Glint360K, 360,232 identities, 17,091,657 aligned 112x112 images (train.rec/.idx).
Expected run: 8 GPUs x 128 images, 20 epochs, SGD lr 0.1, fp16, full softmax (sample_rate 1.0),
as arcface_torch's configs/glint360k_r100 (CosFace margin there); verification on
LFW / CFP-FP / AgeDB-30 every 2000 steps.

    torchrun --nproc_per_node=8 -m lh2face_plugin.train recipes/glint360k_r100_lh2face.py
"""
from lh2face_plugin.arcface_torch.activate import new_config, set_loss

config = new_config()
config.network = "r100"
config.resume = False
config.output = None
config.embedding_size = 512
config.sample_rate = 1.0
config.fp16 = True
config.momentum = 0.9
config.weight_decay = 1e-4
config.batch_size = 128
config.lr = 0.1
config.verbose = 2000
config.dali = False

config.rec = "/train_tmp/glint360k"
config.num_classes = 360232
config.num_image = 17091657
config.num_epoch = 20
config.warmup_epoch = 0
config.val_targets = ["lfw", "cfp_fp", "agedb_30"]

set_loss(config, "lh2face", alpha=0.35, kappa_min=16.0, kappa_max=64.0, vmf_dim=512,
         lambda_pps=0.1, lambda_pns=0.1, lambda_pp=0.1)
