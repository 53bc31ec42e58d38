"""The per-frame streaming predictor: the network compiles once per network input size, however
many frame sizes resize to it; labels come back at each frame's own size, through mmseg's two
resizes."""
import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import load_config, random_clip_batch
from vssjax.methods import get_method
from vssjax.methods.per_frame import PerFramePredictor, logits_to_labels
from vssjax.train.host_init import host_filled


def test_frame_sizes_that_resize_alike_share_the_network_program(monkeypatch):
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")  # eval scale (64, 64)
  method = get_method(config)
  # Host-filled: the values do not matter here, and compiling `init` took as long as the two
  # network programs the test counts.
  variables = host_filled(jax.eval_shape(method.init, jax.random.key(0),
                                         random_clip_batch((1, 1, 64, 64), 9)))
  traced_inputs = []
  network = method._logits  # pylint: disable=protected-access

  def counting_network(variables, frames, **kwargs):  # runs once per trace of the jitted network
    traced_inputs.append(frames.shape[1:3])
    return network(variables, frames, **kwargs)

  monkeypatch.setattr(method, "_logits", counting_network)
  rng = np.random.default_rng(0)
  # 64x64 and 128x128 both become a 64x64 network input; 32x128 becomes 32x64 (16x64, aligned
  # up to the size divisor 32).
  for hw in [(64, 64), (128, 128), (64, 64), (32, 128)]:
    frame = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
    [(index, labels)] = method.predictor(variables).push(frame)
    assert index == 0 and labels.shape == hw
    assert labels.min() >= 0 and labels.max() < 9
  assert traced_inputs == [(64, 64), (32, 64)]


@pytest.mark.parametrize("align_corners", [False, True])
def test_labels_resize_logits_to_the_input_size_then_to_the_frame_size(align_corners):
  """mmseg (and semseg) resize logits to the network input, then to the frame: argmax of torch's
  two bilinear resizes. One direct resize differs at some pixels, so a single resize fails."""
  logits = np.random.default_rng(0).standard_normal((1, 12, 16, 5)).astype(np.float32)
  up = lambda x, hw: F.interpolate(x, hw, mode="bilinear", align_corners=align_corners)
  torch_logits = torch.from_numpy(logits).permute(0, 3, 1, 2)
  expected = up(up(torch_logits, (48, 64)), (45, 61)).argmax(1).numpy()
  one_resize = up(torch_logits, (45, 61)).argmax(1).numpy()
  assert (expected != one_resize).sum() > 10  # the sizes are chosen so that the two differ
  labels = logits_to_labels(logits, (48, 64), (45, 61), align_corners=align_corners)
  np.testing.assert_array_equal(labels, expected)


def test_a_plain_jitted_network_predicts_as_the_program_on_its_part():
  """A method of one's own may pass `jax.jit` of its network: it gets all the variables, as they
  are, at every frame, and the same labels."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.model.dtype = "bfloat16"
  method = get_method(config)
  variables = host_filled(jax.eval_shape(method.init, jax.random.key(0),
                                         random_clip_batch((1, 1, 64, 64), 9)), std=0.3)
  frame = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
  network = jax.jit(method._predict_logits_impl)  # pylint: disable=protected-access
  plain = PerFramePredictor(network, variables, config.data.eval_transform)
  [(_, expected)] = method.predictor(variables).push(frame)
  [(_, labels)] = plain.push(frame)
  np.testing.assert_array_equal(np.asarray(labels), np.asarray(expected))
