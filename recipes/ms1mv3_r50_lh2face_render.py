"""MS1MV3 (ms1m-retinaface-t1), IResNet-50, LH2Face with the renderer-augmented input.

Dataset: MS1MV3, 93,431 identities, 5,179,510 aligned 112x112 images (train.rec/.idx).
Expected run: 8 GPUs x 128 images, 20 epochs, SGD lr 0.1, fp16, as ms1mv3_r50_lh2face.py, with
the backbone fed [RGB, canonical RGB, depth]. The reconstruction is pretrained first on
synthetic faces with ground-truth depth and pose (about 3 minutes on 2 CPU cores):

    lh2face render pretrain --data synthetic --steps 1000 --pool 2048 --out work_dirs/render_synthetic.pt
    lh2face train recipes/ms1mv3_r50_lh2face_render.py
    torchrun --nproc_per_node=8 -m lh2face_plugin.train recipes/ms1mv3_r50_lh2face_render.py

The pretrained reconstruction stays fixed (mode "frozen"): fine-tuning it with the
self-supervised L_reco moved it away from the true depth and pose on synthetic faces within
300 steps (docs/render.md, "Renderer-augmented input"). The backbone learns from the RGB, canonical
face and depth, with the head's loss alone: L_FR^canon and L_view are off (lambda_canon=0,
lambda_view=0, the module's defaults), as measured (docs/render.md, "Defaults": with them hard-HQ
TAR@1e-2 fell by 2.6 points with CosFace and 1.3 with LH2Face on the toy bench). Set lambda_canon=0.5,
lambda_view=0.1 to add them on the first canon_fraction (0.125) of each batch: one extra backbone
pass on 16 of 128 faces. mode="joint" with lambda_reco > 0 is the Unsup3d-style joint training.
"""
from lh2face_plugin.arcface_torch.activate import new_config, set_input_module, set_loss

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
set_input_module(config, "render", checkpoint="work_dirs/render_synthetic.pt", mode="frozen",
                 lambda_canon=0.0, lambda_view=0.0, canon_fraction=0.125)
