"""MS1MV3 (ms1m-retinaface-t1), IResNet-50, LH2Face.

Dataset: MS1MV3, 93,431 identities, 5,179,510 aligned 112x112 images (train.rec/.idx).
Expected run: 8 GPUs x 128 images, 20 epochs, SGD lr 0.1, fp16; the same schedule as
arcface_torch's configs/ms1mv3_r50 (ArcFace), so the two runs compare one to one on
LFW / CFP-FP / AgeDB-30 (verified every 2000 steps) and IJB-C.

    lh2face train recipes/ms1mv3_r50_lh2face.py
    torchrun --nproc_per_node=8 -m lh2face_plugin.train recipes/ms1mv3_r50_lh2face.py
"""
from lh2face_plugin.arcface_torch.activate import new_config, set_loss

config = new_config()
config.network = "r50"
config.resume = False
config.output = None
config.embedding_size = 512
config.sample_rate = 1.0
config.fp16 = True
config.momentum = 0.9
config.weight_decay = 5e-4
config.batch_size = 128
config.lr = 0.1
config.verbose = 2000
config.dali = False

config.rec = "/train_tmp/ms1m-retinaface-t1"
config.num_classes = 93431
config.num_image = 5179510
config.num_epoch = 20
config.warmup_epoch = 0
config.val_targets = ["lfw", "cfp_fp", "agedb_30"]

set_loss(config, "lh2face", alpha=0.35, kappa_min=16.0, kappa_max=64.0, vmf_dim=512,
         lambda_pps=0.1, lambda_pns=0.1, lambda_pp=0.1)
