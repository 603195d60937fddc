"""CASIA-WebFace, IResNet-50, LH2Face: the small-scale, paper-style setting.

Dataset: CASIA-WebFace (faces_webface_112x112), 10,572 identities, 494,414 aligned 112x112
images (train.rec/.idx). Expected run: 1 to 4 GPUs, 512 images per step in all (128 per GPU on
4 GPUs), 34 epochs, SGD lr 0.1, fp32; verification on LFW / CFP-FP / AgeDB-30 every 1000 steps.
Small enough to compare heads (lh2face, arcface, mv-softmax, sv-softmax, uss) in a day.

    torchrun --nproc_per_node=4 -m lh2face_plugin.train recipes/casia_r50_lh2face.py
"""
from lh2face_plugin.arcface_torch.activate import new_config, set_loss

config = new_config()
config.network = "r50"
config.resume = False
config.output = None
config.embedding_size = 512
config.sample_rate = 1.0
config.fp16 = False
config.momentum = 0.9
config.weight_decay = 5e-4
config.batch_size = 128
config.lr = 0.1
config.verbose = 1000
config.dali = False

config.rec = "/train_tmp/faces_webface_112x112"
config.num_classes = 10572
config.num_image = 494414
config.num_epoch = 34
config.warmup_epoch = 1
config.val_targets = ["lfw", "cfp_fp", "agedb_30"]

set_loss(config, "lh2face", alpha=0.35, kappa_min=16.0, kappa_max=64.0, vmf_dim=512,
         lambda_pps=0.1, lambda_pns=0.1, lambda_pp=0.1)
