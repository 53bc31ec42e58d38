"""Cross-entropy conventions on a hand-computed case."""

import jax.numpy as jnp
import numpy as np
import pytest

from vssjax.methods import losses


def test_cross_entropy_valid_and_all_averages():
  # Two pixels, two classes: logits (0, 0) -> nll log 2; (log 3, 0) with label 1 -> nll log 4.
  logits = jnp.array([[[[0.0, 0.0], [np.log(3.0), 0.0], [5.0, -5.0]]]])
  labels = jnp.array([[[0, 1, 255]]])
  valid = losses.segmentation_cross_entropy(logits, labels, average="valid")
  all_pixels = losses.segmentation_cross_entropy(logits, labels, average="all")
  np.testing.assert_allclose(valid, (np.log(2) + np.log(4)) / 2, rtol=1e-6)
  np.testing.assert_allclose(all_pixels, (np.log(2) + np.log(4)) / 3, rtol=1e-6)
  with pytest.raises(ValueError, match="average"):
    losses.segmentation_cross_entropy(logits, labels, average="mean")


def test_pixel_accuracy_ignores_255():
  logits = jnp.array([[[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]]])
  labels = jnp.array([[[0, 1, 255]]])
  np.testing.assert_allclose(losses.pixel_accuracy(logits, labels), 0.5)


def test_logits_are_upsampled_to_label_size():
  logits = jnp.zeros((1, 2, 3, 4), jnp.bfloat16)
  out = losses.logits_at_label_size(logits, jnp.zeros((1, 8, 12), jnp.int32))
  assert out.shape == (1, 8, 12, 4) and out.dtype == jnp.float32


def test_logits_are_upsampled_as_torch_interpolates_with_align_corners_false():
  """mmseg's resize before every loss: a row (0, 1) doubled samples at -0.25, 0.25, 0.75, 1.25,
  edges clamped (align_corners=True would give 0, 1/3, 2/3, 1)."""
  logits = jnp.array([[[[0.0], [1.0]]]])  # [N=1, h=1, w=2, C=1]
  out = losses.logits_at_label_size(logits, jnp.zeros((1, 1, 4), jnp.int32))
  np.testing.assert_allclose(np.ravel(out), [0.0, 0.25, 0.75, 1.0], atol=1e-6)
