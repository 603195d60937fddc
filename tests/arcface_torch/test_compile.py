"""torch.compile of a training step through the plugin's Partial FC (issue 22, item 4): every backend gives
the eager gradients (the blockwise layer runs eagerly inside the compiled step; the dense layer traces)."""
from __future__ import annotations

import pytest
import torch

import lh2face_plugin

pytestmark = [pytest.mark.arcface_torch, pytest.mark.slow]

D, C, B, F_IN = 8, 40, 12, 10


def _step(pfc_class, name, blockwise, backend):
    torch.manual_seed(0)
    backbone = torch.nn.Linear(F_IN, D)
    pfc = pfc_class(lh2face_plugin.build_head(name), D, C, 1.0, False, blockwise=blockwise, block_elements=4 * B)
    images = torch.randn(B, F_IN)
    labels = torch.randint(0, C, (B,))

    def forward(images):
        return pfc(backbone(images) * 8.0, labels)

    run = forward if backend is None else torch.compile(forward, backend=backend)
    losses = []
    for _ in range(2):   # two steps: a stateful head's state moves between them
        backbone.zero_grad(set_to_none=True)
        pfc.zero_grad(set_to_none=True)
        loss = run(images)
        loss.backward()
        losses.append(loss.detach())
    grad_w = pfc.weight.grad.to_dense() if pfc.weight.grad.is_sparse else pfc.weight.grad
    return torch.stack(losses), backbone.weight.grad.clone(), grad_w.clone()


CASES = [("lh2face", layer, backend) for layer in ("dense", "blockwise") for backend in ("eager", "aot_eager", "inductor")]
CASES += [("arcface", layer, "inductor") for layer in ("dense", "blockwise")]   # one stateful, one cosine-only head


@pytest.mark.parametrize("name,layer,backend", CASES)
def test_compiled_step_gives_the_eager_gradients(real_pfc_class, name, layer, backend):
    blockwise = layer == "blockwise"
    torch._dynamo.reset()
    want = _step(real_pfc_class, name, blockwise, None)
    got = _step(real_pfc_class, name, blockwise, backend)
    for g, w, what in zip(got, want, ("loss", "backbone gradient", "class proxy gradient")):
        err = float((g - w).abs().max() / w.abs().max().clamp_min(1e-12))
        assert err <= 1e-5, f"{what}: max error {err:.2e} relative to the largest entry"
