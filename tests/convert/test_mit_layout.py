"""Which MiT a checkpoint holds, read from its keys (mmseg names here; HF's in
test_hf_segformer.py)."""
import numpy as np

from vssjax.convert.mmseg_segformer import mit_hint
from vssjax.models.mit import MIT_VARIANTS, mit


def _mmseg_keys(variant: str) -> dict[str, np.ndarray]:
  """The keys `mit_mismatch` reads of an mmseg MiT-`variant` checkpoint: each stage's patch
  embedding weight and one tensor per block."""
  layout = MIT_VARIANTS[variant]
  keys = {}
  for stage, (dim, depth) in enumerate(zip(layout["embed_dims"], layout["depths"]), start=1):
    keys[f"backbone.patch_embed{stage}.proj.weight"] = np.zeros((dim, 3, 1, 1), np.float32)
    keys.update({f"backbone.block{stage}.{j}.norm1.weight": np.zeros(dim) for j in range(depth)})
  return keys


def test_another_size_is_named():
  assert mit_hint(_mmseg_keys("b2"), mit("b5"), "backbone.") == (
      "the checkpoint holds MiT-b2 (embed_dims (64, 128, 320, 512), depths (3, 4, 6, 3)), the "
      "config's model.backbone is MiT-b5 (embed_dims (64, 128, 320, 512), depths (3, 6, 40, 3)): "
      "use the config of the checkpoint's size (or set model.backbone; its results are then not "
      "set against the config's published numbers)")


def test_the_same_size_or_no_mit_says_nothing():
  assert mit_hint(_mmseg_keys("b1"), mit("b1"), "backbone.") is None
  assert mit_hint({"decode_head.linear_pred.weight": np.zeros(1)}, mit("b1"), "backbone.") is None
