"""Renderer-augmented input: LH2Face's reconstruction branch in our design (METHODS.md section 5).

- :mod:`.network`: depth, albedo, light and viewpoint from an aligned face.
- :mod:`.renderer`: camera, shading, frontalisation and re-rendering warps.
- :mod:`.losses`: photometric (confidence-weighted), symmetry, identity and view terms.
- :mod:`.fusion`: the 7-channel stem that leaves a pretrained backbone unchanged at step 0.
- :mod:`.module`: the registered ``"render"`` input module and the wrapped model.
- :mod:`.pretrain`, :mod:`.evaluate`, :mod:`.metrics`, :mod:`.show`: pretraining, ground-truth
  evaluation on synthetic faces (SIDE, MAD, frontalisation error) and pictures.
"""
