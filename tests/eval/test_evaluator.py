"""The evaluator's loop: each push's predictions are fetched and scored only after the next push
is dispatched (so the device works while the host scores), and the scores are those of the
predictions in order."""
import numpy as np

from data_pipelines.loader import eval_videos
from tests.conftest import load_config
from vssjax.eval import evaluator
from vssjax.methods.base import Method, StreamingPredictor
from vssjax.metrics.confusion import ConfusionMatrix, miou_vspw

NUM_CLASSES = 9


def _labels_of(frame: np.ndarray) -> np.ndarray:
  return np.minimum(frame.astype(np.int32).sum(-1) // 86, NUM_CLASSES - 1)


class _Fetched:
  """A prediction not yet on the host: logs when the evaluator fetches it."""

  def __init__(self, labels: np.ndarray, index: int, log: list):
    self._labels, self._index, self._log = labels, index, log

  def __array__(self, dtype=None, copy=None):
    self._log.append(("fetch", self._index))
    return self._labels


class _OneBehindPredictor(StreamingPredictor):
  """Answers frame t at push t+1 and the last frame at flush, as a look-ahead method does."""

  def __init__(self, log: list):
    self._log, self._held, self._index = log, None, 0

  def push(self, frame):
    index, self._index = self._index, self._index + 1
    self._log.append(("push", index))
    ready = [] if self._held is None else [self._held]
    self._held = (index, _Fetched(_labels_of(frame), index, self._log))
    return ready

  def flush(self):
    return [self._held]


class _OneBehindMethod(Method):
  def __init__(self, config, log):
    super().__init__(config)
    self.log = log

  def init(self, rng, batch):
    raise NotImplementedError

  def loss_and_metrics(self, params, model_state, batch, rng):
    raise NotImplementedError

  def predictor(self, variables):
    return _OneBehindPredictor(self.log)


def test_predictions_are_fetched_one_push_late_and_scored_in_order():
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.data.backend = "memory"
  config.eval.update(overlay_video=False, max_videos=1)
  log = []
  results = evaluator.evaluate(_OneBehindMethod(config, log), {}, config, workdir=None)

  [video] = list(eval_videos(config.data, config.data.eval_split))[:1]
  pairs = list(video)
  # Frame t's answer comes with push t+1; it is fetched after push t+2 is dispatched.
  expected_log = [("push", 0), ("push", 1)]
  for t in range(2, len(pairs)):
    expected_log += [("push", t), ("fetch", t - 2)]
  expected_log += [("fetch", len(pairs) - 2), ("fetch", len(pairs) - 1)]
  assert log == expected_log

  confusion = ConfusionMatrix(NUM_CLASSES)
  for frame, label in pairs:
    confusion.update(label, _labels_of(frame))
  assert results["num_frames"] == len(pairs)
  assert results["mIoU"] == miou_vspw(confusion.matrix)
  assert results["frames_per_s"] > 0
