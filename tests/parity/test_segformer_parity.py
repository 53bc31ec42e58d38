"""HF transformers SegFormer (torch, eval) vs vssjax SegFormer with converted weights.

Every weight is re-drawn at unit-ish scale (HF's 0.02-std init makes the blocks nearly identity
maps, which would hide wiring errors) and the BN running statistics are randomised. HF's block and
stage LayerNorms use eps 1e-5 where mmseg (and vssjax) use 1e-6; they are pinned to 1e-6 so the
comparison is exact up to float rounding. The model is built by tests/parity/hf_models.py.

HF runs in float64 on the float32 weights, so the difference is vssjax's float32 rounding alone:
at most 3.9e-6 (stages and logits, B0 and B5). An eps of 1e-5 instead of 1e-6 in the blocks'
norm1/norm2 gives 9.6e-6 (B0) and 8.9e-6 (B5) in stage 1 already (up to 1.7e-5 in later stages),
in the stage norms too 1.3e-5; `TOLERANCE` lies halfway between 3.9e-6 and 9.6e-6 on a log scale.
With a float32 reference the rounding reached 6.1e-6, and the tolerance was 1e-4: the eps passed.
"""
import jax
import numpy as np
import pytest
import torch

from tests.conftest import method_segformer
from tests.parity.hf_models import random_hf_segformer
from vssjax.convert.hf_segformer import convert_hf_segformer

TOLERANCE = 6e-6


@pytest.mark.parametrize("variant, depths, embed_dim", [
    ("b0", (2, 2, 2, 2), 256),
    ("b5", (1, 1, 1, 1), 768),  # B2/B5 widths, heads and sr ratios; depth cut for speed
])
def test_segformer_matches_transformers(variant, depths, embed_dim):
  """The converted model's stages and logits within vssjax's float32 rounding of HF's float64
  ones: a wiring, conversion or precision error shows, down to a block LayerNorm eps of 1e-5."""
  hf = random_hf_segformer(variant, depths, num_classes=11, embed_dim=embed_dim)
  variables = convert_hf_segformer({k: v.numpy() for k, v in hf.state_dict().items()},
                                   model := method_segformer(variant, 11, embed_dim,
                                                             depths=depths))
  images = np.random.default_rng(1).standard_normal((1, 75, 109, 3)).astype(np.float32)
  with torch.no_grad():
    expected = hf.double()(torch.from_numpy(images).double().permute(0, 3, 1, 2),
                           output_hidden_states=True)

  @jax.jit
  def forward(v, x):
    features = model.apply(v, x, train=False, method=lambda m, x, train: m.backbone(x, train=train))
    return features, model.apply(v, x, train=False)

  with jax.default_matmul_precision("highest"):
    features, logits = forward(variables, images)
  assert len(expected.hidden_states) == 4
  for stage, (ours, theirs) in enumerate(zip(features, expected.hidden_states), start=1):
    theirs = theirs.permute(0, 2, 3, 1).numpy()
    assert ours.shape == theirs.shape, stage
    error = np.abs(np.asarray(ours) - theirs).max()
    assert error <= TOLERANCE, f"stage {stage}: {error:.2e}"
  theirs = expected.logits.permute(0, 2, 3, 1).numpy()
  assert logits.shape == theirs.shape == (1, 19, 28, 11)
  error = np.abs(np.asarray(logits) - theirs).max()
  assert error <= TOLERANCE, f"logits: {error:.2e}"
