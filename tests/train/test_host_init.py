"""Host-filled variables: Flax's unit scales and variances, zero biases and means, normal rest."""
import jax
import numpy as np

from vssjax.train.host_init import host_filled


def test_leaves_are_filled_by_name_with_their_shapes_and_dtypes():
  shapes = {"params": {"dense": {"kernel": jax.ShapeDtypeStruct((64, 128), np.float32),
                                 "bias": jax.ShapeDtypeStruct((128,), np.float32)},
                       "norm": {"scale": jax.ShapeDtypeStruct((128,), np.float32)}},
            "batch_stats": {"bn": {"mean": jax.ShapeDtypeStruct((8,), np.float32),
                                   "var": jax.ShapeDtypeStruct((8,), np.float32)}}}
  filled = host_filled(shapes, seed=3, std=0.02)
  assert jax.tree.map(lambda x: (x.shape, x.dtype), filled) == jax.tree.map(
      lambda s: (s.shape, s.dtype), shapes)
  assert (filled["params"]["norm"]["scale"] == 1).all()
  assert (filled["batch_stats"]["bn"]["var"] == 1).all()
  assert not filled["params"]["dense"]["bias"].any()
  assert not filled["batch_stats"]["bn"]["mean"].any()
  assert 0.018 < filled["params"]["dense"]["kernel"].std() < 0.022
  # The same draws for the same seed, scaled by std.
  np.testing.assert_allclose(host_filled(shapes, seed=3)["params"]["dense"]["kernel"] * 0.2,
                             filled["params"]["dense"]["kernel"], rtol=1e-6)
