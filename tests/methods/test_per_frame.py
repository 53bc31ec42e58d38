"""The per-frame streaming predictor: the network compiles once per network input size, however
many frame sizes resize to it; labels come back at each frame's own size."""
import jax
import numpy as np

from tests.conftest import load_config, random_clip_batch
from vssjax.methods import get_method


def test_frame_sizes_that_resize_alike_share_the_network_program(monkeypatch):
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")  # eval scale (64, 64)
  method = get_method(config)
  variables = jax.jit(method.init)(jax.random.key(0), random_clip_batch((1, 1, 64, 64), 9))
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
