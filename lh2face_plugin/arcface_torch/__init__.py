"""Everything that knows insightface's arcface_torch; the rest of the package never imports it.

locate (find the checkout: the one place train, eval and export use), revision (is it a known one),
config (recipes and the plugin's keys), partial_fc (PartialFC_V2 subclass with the full head contract),
compat (today's stack: torch >= 2.7, no mxnet, no working torchvision, CPU smoke runs), mxnet_shim and
torchvision_shim (the parts arcface_torch uses), activate (the Activation object that rebinds
train_v2's names), autoload (the start-up hook's work in the stock train_v2.py; its gate is the
top-level module ``_lh2face_autoload``), term_logging (the head's loss components in the host's log),
train (``lh2face train``), doctor (``lh2face doctor``), smoke (CPU smoke data), reference (its own
evaluation scripts, run in this process), networks (its ``backbones``).

Nothing is imported here, and importing any of these modules changes nothing in a running trainer.
"""
