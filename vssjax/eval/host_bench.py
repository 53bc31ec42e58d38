"""How fast the evaluator's host side can feed a device: the real evaluation of a config's data
against a simulated device that takes a fixed time per frame.

  python -m vssjax.eval.host_bench --config=configs/segformer/vspw_mitb1.py --device_ms=0,5,10

Everything but the network is real: decoding the frames and labels, the predictor's host resize,
fetching the label maps, the confusion matrix, mVC/VEC (and TC where the config has it). The
"device" is one worker thread that sleeps `device_ms` per frame, as a GPU computes without the
host's cores, and answers with labels made from the frame. When the measured frames/s stays below
1000 / device_ms, the evaluation of a model that fast would be host-bound at that figure.
"""

from __future__ import annotations

import concurrent.futures
import math
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from data_pipelines.eval_transforms import eval_resize
from vssjax.command_line import (numbers_flag, parse_config_flags, quiet_routine_logs,
                                 refuse_arguments, user_errors_in_one_line)
from vssjax.errors import SetupError
from vssjax.eval.evaluator import evaluate
from vssjax.methods.base import Prediction, StreamingPredictor

class _DeviceLabels:
  """A label map the simulated device is still computing; `np.asarray` waits for it."""

  def __init__(self, future: concurrent.futures.Future):
    self._future = future

  def __array__(self, dtype=None, copy=None):
    del copy
    labels = self._future.result()
    return labels if dtype is None else labels.astype(dtype)


class _SimulatedDevicePredictor(StreamingPredictor):
  """A per-frame predictor whose network is `device_s` of waiting on a device thread."""

  def __init__(self, device: concurrent.futures.Executor, device_s: float, num_classes: int,
               eval_transform):
    self._device, self._device_s = device, device_s
    self._num_classes, self._eval_transform = num_classes, eval_transform
    self._index = 0

  def _predict(self, frame: np.ndarray) -> np.ndarray:
    start = time.perf_counter()
    labels = (frame[..., 1] // 40).astype(np.int32) % self._num_classes
    time.sleep(max(0.0, self._device_s - (time.perf_counter() - start)))
    return labels

  def push(self, frame: np.ndarray) -> list[Prediction]:
    eval_resize(frame, self._eval_transform)  # host share
    index, self._index = self._index, self._index + 1
    return [(index, _DeviceLabels(self._device.submit(self._predict, frame)))]


class _SimulatedDeviceMethod:
  """What the evaluator needs of a method: a fresh predictor per video."""

  def __init__(self, device: concurrent.futures.Executor, device_s: float, config):
    self._args = device, device_s, config.data.num_classes, config.data.eval_transform

  def video_predictors(self, variables, protocol_index: int) -> list[StreamingPredictor]:
    del variables, protocol_index
    return [_SimulatedDevicePredictor(*self._args)]


def run(config, device_ms: list[float]) -> list[dict[str, float]]:
  """One evaluation per simulated device time; returns their frames/s and wall times."""
  rows = []
  with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="simulated_device") as device:
    for ms in device_ms:
      start = time.perf_counter()
      # The simulated device, like a GPU, leaves the host's cores to the host: decode ahead.
      results = evaluate(_SimulatedDeviceMethod(device, ms / 1e3, config), None, config,
                         workdir=None, decode_ahead=True)
      rows.append(dict(device_ms=ms, frames_per_s=results["frames_per_s"],
                       wall_s=time.perf_counter() - start, num_frames=results["num_frames"]))
  return rows


def print_table(rows: list[dict[str, float]]) -> None:
  print("| simulated device ms/frame | evaluation frames/s | device-bound frames/s | wall s |")
  print("|---|---|---|---|")
  for row in rows:
    bound = f"{1e3 / row['device_ms']:.1f}" if row["device_ms"] else "-"
    print(f"| {row['device_ms']:g} | {row['frames_per_s']:.1f} | {bound} | {row['wall_s']:.2f} |",
          flush=True)


def _cli() -> None:
  """The command line. Its flags are defined only when run as a program, so that importing this
  module (the tests, next to vssjax.main's own --config) defines none."""
  config_flag = config_flags.DEFINE_config_file("config", None, "method config file",
                                                lock_config=False)
  device_ms = flags.DEFINE_list("device_ms", ["0", "5", "10"], "simulated device ms per frame")
  max_videos = flags.DEFINE_integer("max_videos", 0, "evaluate the split's first N videos (0: all)")

  @user_errors_in_one_line
  def main(argv):
    refuse_arguments(argv)
    device_ms_each = numbers_flag("device_ms", device_ms.value, float)
    if not device_ms_each or not all(math.isfinite(ms) and ms >= 0 for ms in device_ms_each):
      raise SetupError(f"--device_ms={','.join(device_ms.value)}: one or more device times per "
                       "frame, in ms, each 0 or more")
    quiet_routine_logs()
    config = config_flag.value
    if config is None:
      raise SetupError("--config is required: the config whose evaluation's host side is timed "
                       "(e.g. --config=configs/segformer/synthetic_mitb0.py)")
    config.eval.overlay_video = False
    if max_videos.value:
      config.eval.max_videos = max_videos.value
    print_table(run(config, device_ms_each))

  app.run(main, flags_parser=parse_config_flags)


if __name__ == "__main__":
  _cli()
