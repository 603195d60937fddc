"""Everything that knows insightface's arcface_torch; the rest of the package never imports it.

locate (find the checkout), revision (is it a known one), config (recipes and the plugin's keys),
partial_fc (PartialFC_V2 subclass with the full head contract), compat (today's stack: torch >= 2.7,
no mxnet, CPU smoke runs), mxnet_shim (the mxnet parts arcface_torch uses), activate (rebinding
train_v2's names), train (``lh2face train``), doctor (``lh2face doctor``), smoke (CPU smoke data).

Nothing is imported here: importing :mod:`.activate` activates a running train_v2.
"""
