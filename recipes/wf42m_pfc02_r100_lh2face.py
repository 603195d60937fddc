"""WebFace42M, IResNet-100, LH2Face with Partial FC sampling 20% of the classes.

Dataset: WebFace42M, 2,059,906 identities, 42,474,557 aligned 112x112 images (a shuffled
train.rec for DALI, see arcface_torch's docs). Expected run: 8 GPUs x 128 images, 20 epochs,
SGD lr 0.1, fp16, warm-up 2 epochs, sample_rate 0.2 (each step uses every positive class
plus random negatives, 20% of each rank's shard), as arcface_torch's configs/wf42m_pfc02_r100.
The LH2Face proxy loss L_pp runs over the sampled proxies only.

    torchrun --nproc_per_node=8 -m lh2face_plugin.train recipes/wf42m_pfc02_r100_lh2face.py
"""
from lh2face_plugin.arcface_torch.activate import new_config, set_loss

config = new_config()
config.network = "r100"
config.resume = False
config.output = None
config.embedding_size = 512
config.sample_rate = 0.2
config.fp16 = True
config.momentum = 0.9
config.weight_decay = 5e-4
config.batch_size = 128
config.lr = 0.1
config.verbose = 10000
config.dali = True

config.rec = "/train_tmp/WebFace42M"
config.num_classes = 2059906
config.num_image = 42474557
config.num_epoch = 20
config.warmup_epoch = 2
config.val_targets = ["lfw", "cfp_fp", "agedb_30"]

set_loss(config, "lh2face", alpha=0.35, kappa_min=16.0, kappa_max=64.0, vmf_dim=512,
         lambda_pps=0.1, lambda_pns=0.1, lambda_pp=0.1)
