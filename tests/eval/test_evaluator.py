"""The evaluator's loop: each push's predictions are fetched and scored only after the next push
is dispatched (so the device works while the host scores), a video's whole-video metrics are
computed on a worker thread, and the scores are those of the predictions in order."""
import pickle
import threading
import time

import cv2
import jax
import numpy as np
import pytest

from data_pipelines.dataset import make_source
from data_pipelines.loader import eval_videos
from data_pipelines.read_ahead import read_ahead
from data_pipelines.sources.base import DataError
from tests.conftest import (SYNTHETIC_CLASSES, FakeClock, OneSizePredictor,
                            assert_later_sizes_traced_ahead, brightness_labels, load_config,
                            random_config_batch, slow_down, traced_functions)
from vssjax.errors import SetupError
from vssjax.eval import evaluator, report
from vssjax.eval.compile_ahead import CompileAhead
from vssjax.eval.stream import stream_predictions
from vssjax.methods.base import Method, StreamingPredictor
from vssjax.metrics.confusion import (ConfusionMatrix, fwiou, miou_all_classes, miou_vspw,
                                      pixel_accuracy)
from vssjax.metrics.consistency import VideoConsistency
from vssjax.metrics.temporal_consistency import TemporalConsistency
from vssjax.methods import get_method
from vssjax.train.host_init import host_filled
from vssjax.train.loop import batch_spec


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
    self._held = (index, _Fetched(brightness_labels(frame), index, self._log))
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
  config.data.backend = "files"
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

  confusion = ConfusionMatrix(SYNTHETIC_CLASSES)
  for frame, label in pairs:
    confusion.update(label, brightness_labels(frame))
  assert results["num_frames"] == len(pairs)
  assert results["mIoU"] == miou_vspw(confusion.matrix)
  assert results["frames_per_s"] > 0
  # Which generated set: the synthetic knobs (`compare` sets runs on other sets apart).
  assert results["data_settings"] == config.data.synthetic.to_dict()
  # Per-class IoU under the source's class names, for results.md's per-class table.
  assert len(results["class_names"]) == len(results["per_class_iou"]) == SYNTHETIC_CLASSES
  assert results["class_names"] == list(make_source(config.data).class_names)


def _config_with_scored_videos():
  """The quick synthetic config with videos long enough for mVC/VEC (> 16 frames)."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.data.backend = "files"
  config.data.synthetic.update(num_frames=20, num_val_videos=3)
  config.eval.overlay_video = False
  return config


def test_whole_video_scores_run_on_the_scoring_thread_in_video_order(monkeypatch):
  config = _config_with_scored_videos()
  add_video = VideoConsistency.add_video
  scored_on = []

  def recording_add_video(self, gts, preds, **kwargs):
    scored_on.append(threading.current_thread().name)
    return add_video(self, gts, preds, **kwargs)

  monkeypatch.setattr(VideoConsistency, "add_video", recording_add_video)
  results = evaluator.evaluate(_OneBehindMethod(config, []), {}, config, workdir=None)

  assert len(scored_on) == 3 and all(name.startswith("eval_scoring") for name in scored_on)
  expected = VideoConsistency(SYNTHETIC_CLASSES, windows=tuple(config.eval.windows))
  for video in eval_videos(config.data, config.data.eval_split):
    frames, labels = zip(*video)
    add_video(expected, np.stack(labels), np.stack([brightness_labels(f) for f in frames]))
  assert expected.videos_scored == 3
  for name, value in expected.summary().items():
    assert results[name] == value, name  # same additions in the same order: identical sums


def test_conventions_of_the_reported_mIoU_and_mVC():
  """One 12-frame video: a class is missing (VSPW's and DCFM's mIoU differ) and VSPW's mVC skips
  the video while DCFM's scores its 8-frame windows. wIoU and pixel accuracy are those of the
  same pixels (each its own metric: they differ here)."""
  config = _config_with_scored_videos()
  config.data.synthetic.num_frames = 12
  config.eval.max_videos = 1
  default = evaluator.evaluate(_OneBehindMethod(config, []), {}, config, workdir=None)
  config.eval.update(miou_convention="all_classes", vc_convention="dcfm")
  dcfm = evaluator.evaluate(_OneBehindMethod(config, []), {}, config, workdir=None)

  [video] = list(eval_videos(config.data, config.data.eval_split, max_videos=1))
  frames, labels = zip(*video)
  preds = [brightness_labels(f) for f in frames]
  confusion, consistency = ConfusionMatrix(SYNTHETIC_CLASSES), VideoConsistency(
      SYNTHETIC_CLASSES, windows=tuple(config.eval.windows), vc_convention="dcfm")
  confusion.update(np.stack(labels), np.stack(preds))
  consistency.add_video(np.stack(labels), np.stack(preds))
  assert default["mIoU"] == default["mIoU_vspw"] == miou_vspw(confusion.matrix)
  assert dcfm["mIoU"] == dcfm["mIoU_all_classes"] == miou_all_classes(confusion.matrix)
  assert dcfm["mIoU"] != pytest.approx(default["mIoU"])
  assert default["wIoU"] == fwiou(confusion.matrix)
  assert default["pixel_acc"] == pixel_accuracy(confusion.matrix)
  assert default["wIoU"] != pytest.approx(default["pixel_acc"])
  assert (default["mIoU_convention"], dcfm["mIoU_convention"]) == ("vspw", "all_classes")
  assert np.isnan(default["mVC_8"]) and dcfm["mVC_8"] == consistency.summary()["mVC_8"]
  assert (default["mVC_convention"], dcfm["mVC_convention"]) == ("vspw", "dcfm")
  config.eval.miou_convention = "paper"
  with pytest.raises(ValueError, match="eval.miou_convention must be one of"):
    evaluator.evaluate(_OneBehindMethod(config, []), {}, config, workdir=None)
  config.eval.update(miou_convention="vspw", max_videos=-1)  # was: no video, NaN metrics
  with pytest.raises(SetupError, match=r"eval.max_videos=-1: 0 \(every video\)"):
    evaluator.make_scorers(config)
  config.eval.update(max_videos=0, devices=99)  # checked before training, with the others
  with pytest.raises(SetupError, match=r"eval.devices=99: .* the devices of this process"):
    evaluator.make_scorers(config)


def test_an_error_while_scoring_a_video_names_the_video(monkeypatch):
  config = _config_with_scored_videos()

  def failing_add_video(self, gts, preds, **kwargs):
    raise ValueError("labels out of range")

  monkeypatch.setattr(VideoConsistency, "add_video", failing_add_video)
  first = next(iter(eval_videos(config.data, config.data.eval_split)))
  with pytest.raises(DataError, match=f"video {first.name}: labels out of range"):
    evaluator.evaluate(_OneBehindMethod(config, []), {}, config, workdir=None)


class _OutOfRangePredictor(StreamingPredictor):
  def __init__(self):
    self._index = 0

  def push(self, frame):
    index, self._index = self._index, self._index + 1
    return [(index, np.full(frame.shape[:2], SYNTHETIC_CLASSES + 3 if index == 2 else 0, np.int32))]


def test_a_bad_prediction_names_the_video_and_frame():
  config = _config_with_scored_videos()
  method = _OneBehindMethod(config, [])
  method.predictor = lambda variables: _OutOfRangePredictor()
  first = next(iter(eval_videos(config.data, config.data.eval_split)))
  with pytest.raises(SetupError, match=r"^_OutOfRangePredictor's label map of frame 2 holds "
                     r"class ids from .* outside \[0, 9\)") as error:
    evaluator.evaluate(method, {}, config, workdir=None)
  assert f"while evaluating video {first.name} of split 'val'" in error.value.__notes__


def test_decoding_ahead_is_for_accelerators_and_changes_no_score(monkeypatch):
  config = _config_with_scored_videos()
  threaded = []
  monkeypatch.setattr(evaluator, "read_ahead",
                      lambda items: threaded.append(1) or read_ahead(items))
  default = evaluator.evaluate(_OneBehindMethod(config, []), {}, config, workdir=None)
  assert not threaded  # the CPU backend: XLA's threads have the cores, no decoding thread
  ahead = evaluator.evaluate(_OneBehindMethod(config, []), {}, config, workdir=None,
                             decode_ahead=True)
  assert len(threaded) == 3  # one per video
  for name, value in default.items():
    if name != "frames_per_s":
      assert ahead[name] == value, name


def test_compiling_ahead_traces_the_later_frame_sizes_off_the_predicting_thread_to_the_same_scores(
    monkeypatch):
  """Videos of three frame sizes through the quick SegFormer: with `compile_ahead` the programs
  of the later sizes (the forward, the label upsampling) are traced on the compile-ahead thread;
  where the videos are predicted, only during the first video, whose size compiles as it is
  predicted. The scores are those of compiling as the videos come (off by default on the CPU
  backend, as decoding ahead)."""
  config = _config_with_scored_videos()
  [video] = list(eval_videos(config.data, config.data.eval_split, max_videos=1))

  def resized(h, w):  # 8 frames: every program comes up in the first
    return [(cv2.resize(frame, (w, h)), cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST))
            for frame, label in list(video)[:8]]

  # Sizes no other test uses, so their programs are traced here, not found cached: network inputs
  # of 32x80, 80x32 and 80x80.
  config.data.eval_transform.update(scale=(80, 80), size_divisor=16)
  sizes = [(40, 120), (40, 120), (120, 40), (40, 120), (100, 100)]
  videos = [_Video(f"video {i}", i, resized(*hw)) for i, hw in enumerate(sizes)]
  monkeypatch.setattr(evaluator, "eval_videos", lambda *args, **kwargs: videos)
  log = []  # (thread, traced function) and ("predict", video), in order
  predict_video = evaluator._predict_video

  def logged_predict_video(predictor, video, *args):
    log.append(("predict", video.name))
    return predict_video(predictor, video, *args)

  monkeypatch.setattr(evaluator, "_predict_video", logged_predict_video)
  slow_down(monkeypatch, evaluator, "_predict_black_video", 0.5)
  spec = batch_spec(config)
  batch = {k: np.zeros(s.shape, s.dtype) for k, s in spec.items()}
  results = {}
  with traced_functions(log):
    for ahead in (True, None):
      method = get_method(config)  # its programs jitted afresh
      variables = jax.jit(method.init)(jax.random.key(0), batch)
      log.clear()
      results[ahead] = evaluator.evaluate(method, variables, config, workdir=None,
                                          compile_ahead=ahead)
      if ahead:
        assert_later_sizes_traced_ahead(log, "video 1", later_sizes=2)
      else:
        assert "eval_compile_ahead" not in [thread for thread, _ in log]
  _assert_same_scores(results[True], results[None])


@pytest.mark.parametrize("setting", [True, False])
def test_on_an_accelerator_compiling_ahead_follows_its_setting(monkeypatch, setting):
  """`eval.compile_ahead` turns it off where it would run by default (each device's share its
  own thread)."""
  config = _config_with_scored_videos()
  config.eval.compile_ahead = setting
  monkeypatch.setattr(evaluator.parallel, "computes_off_the_host", lambda: True)
  enabled = []

  def compile_ahead(videos, warm_up, on):
    enabled.append(on)
    return CompileAhead(videos, warm_up, enabled=False)

  monkeypatch.setattr(evaluator, "CompileAhead", compile_ahead)
  evaluator.evaluate(_OneBehindMethod(config, []), {}, config, workdir=None)
  assert enabled and set(enabled) == {setting}


@pytest.mark.parametrize("path, arg, method_settings", [
    ("configs/segformer/synthetic_mitb0.py", "quick", {}),
    ("configs/dcfm/synthetic_mitb0.py", "quick,k=3", {}),  # B mode
    ("configs/dcfm/synthetic_mitb0.py", "quick,k=3,mode=P",
     dict(aks=True, aks_threshold=1.0, aks_max_interval=5)),
    ("configs/dtern/synthetic_mitb0.py", "quick", {}),
], ids=["segformer", "dcfm_B", "dcfm_P_aks", "dtern"])
def test_a_methods_warm_up_frames_bring_up_every_program_a_longer_video_runs(path, arg,
                                                                            method_settings):
  """After the compile-ahead warm-up (`method.warm_up_frames` black frames), a video of that
  size four times as long traces nothing: each program its predictors run at that size, and the
  label upsampling to it, came up in the warm-up."""
  config = load_config(path, arg)
  config.method.update(method_settings)
  method = get_method(config)  # its programs jitted afresh
  variables = host_filled(jax.eval_shape(method.init, jax.random.key(0),
                                         random_config_batch(config)))
  rng = np.random.default_rng(0)
  pairs = [(rng.integers(0, 256, (56, 88, 3), np.uint8), None)
           for _ in range(4 * method.warm_up_frames)]
  video = _Video("video", 1, pairs)
  log = []
  with traced_functions(log):
    evaluator._predict_black_video(method, variables, SYNTHETIC_CLASSES, video, pairs[0][0])
    warmed_up = len(log)
    for predictor in evaluator._shot_predictors(method, variables, video):
      for _ in stream_predictions(predictor, [("", frame) for frame, _ in pairs],
                                  SYNTHETIC_CLASSES):
        pass
  assert warmed_up and not log[warmed_up:], log


class _TimedPredictor(StreamingPredictor):
  """Answers each frame at once; its first push costs `first` seconds of the fake clock (a
  compile), each later one `rest`."""

  def __init__(self, clock: FakeClock, first: float, rest: float):
    self._clock, self._cost, self._rest, self._index = clock, first, rest, 0

  def push(self, frame):
    self._clock.now += self._cost
    self._cost = self._rest
    index, self._index = self._index, self._index + 1
    return [(index, brightness_labels(frame))]


@pytest.mark.parametrize("costs, frames_per_s", [
    # 3 videos of 6 frames: the first (compiling) is left out: 12 frames in 6 x 1 + 6 x 3 s.
    ([(100.0, 100.0), (1.0, 1.0), (3.0, 3.0)], 12 / 24),
    # One video: its first frame (the compile) is left out: 5 frames in 5 s.
    ([(100.0, 1.0)], 5 / 5),
])
def test_frames_per_s_leaves_out_the_compiling_first_video_or_frame(monkeypatch, costs,
                                                                    frames_per_s):
  """frames_per_s is the steady-state throughput the results tables report; checked on a fake
  clock, so it is exact and takes no real time."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.data.backend = "files"
  config.data.synthetic.num_val_videos = len(costs)
  config.eval.overlay_video = False
  clock = FakeClock()
  monkeypatch.setattr(evaluator, "time", clock)
  method = _OneBehindMethod(config, [])
  pending = list(costs)
  method.predictor = lambda variables: _TimedPredictor(clock, *pending.pop(0))
  results = evaluator.evaluate(method, {}, config, workdir=None)
  assert results["num_videos"] == len(costs) and results["num_frames"] == 6 * len(costs)
  assert results["frames_per_s"] == pytest.approx(frames_per_s)


def test_frames_per_s_of_several_devices_starts_once_the_last_has_compiled(monkeypatch):
  """Two devices, one video each: timed from the first device's first frame, the second's
  compile (its own first frame, 40 s later) was counted, 2.88 frames/s then 88 on a rerun."""
  clock = FakeClock()
  monkeypatch.setattr(evaluator, "time", clock)
  clock.now = 50.0
  first = [1.0, 2.0, 3.0, 4.0]  # a frame a second after a 1 s compile
  second = [41.0, 42.0, 43.0, 44.0]  # the same after a 41 s one
  assert evaluator._timed_span(sorted(first + second), [1.0, 41.0], started=0.0) == (3, 9.0)
  # A device without a video is left out; one frame in all is timed from the start.
  assert evaluator._timed_span(first, [1.0, None], started=0.0) == (3, 49.0)
  assert evaluator._timed_span([1.0], [1.0], started=0.0) == (1, 50.0)


class _Video:
  """An evaluation video given as its (frame, label or None) pairs."""

  def __init__(self, name: str, protocol_index: int, pairs):
    self.name, self.protocol_index, self._pairs = name, protocol_index, pairs
    self.num_frames = len(pairs)

  def __iter__(self):
    yield from self._pairs


@pytest.mark.parametrize("labelled", [lambda t: t % 4 == 1, lambda t: t > 0],
                         ids=["one_in_four", "all_but_the_first"])
def test_unlabelled_frames_are_predicted_but_not_scored(monkeypatch, labelled):
  """Cityscapes and CamVid label one frame of each snippet: the others are predicted (methods need
  them) and counted as frames, but enter no metric, and a partly labelled video has no mVC (one
  missing label, the first frame's, is enough)."""
  config = _config_with_scored_videos()
  config.eval.update(max_videos=1, vc_convention="dcfm")
  [video] = list(eval_videos(config.data, config.data.eval_split, max_videos=1))
  pairs = [(frame, label if labelled(t) else None) for t, (frame, label) in enumerate(video)]
  monkeypatch.setattr(evaluator, "eval_videos",
                      lambda *args, **kwargs: [_Video("snippet", 0, pairs)])
  results = evaluator.evaluate(_OneBehindMethod(config, []), {}, config, workdir=None)

  confusion = ConfusionMatrix(SYNTHETIC_CLASSES)
  for frame, label in pairs:
    if label is not None:
      confusion.update(label, brightness_labels(frame))
  assert results["num_frames"] == len(pairs) == 20
  assert results["scored_pixels"] == confusion.matrix.sum() > 0
  assert results["mIoU"] == miou_vspw(confusion.matrix)
  assert np.isnan(results["mVC_8"])  # mVC needs every frame's label


class _OneSizeMethod(_OneBehindMethod):
  def predictor(self, variables):
    self.log.append("new predictor")
    return OneSizePredictor(lambda frame, index: brightness_labels(frame))


def _mixed_sizes(sizes) -> list[np.ndarray]:
  rng = np.random.default_rng(0)
  return [rng.integers(0, 256, hw + (3,), np.uint8) for hw in sizes]


def test_a_footage_folder_of_mixed_sizes_is_evaluated_shot_by_shot(tmp_path, capsys):
  """docs/data.md's evaluation of footage for TC: a frame folder of two sizes crashed the clip
  methods' predictors, and TC's first pair across the change. As `--mode=infer` does, each run of
  frames of one size goes through a fresh predictor, and TC scores the pairs within a run."""
  for t, frame in enumerate(_mixed_sizes([(16, 24)] * 3 + [(24, 16)] * 2)):
    cv2.imwrite(str(tmp_path / f"{t:06d}.png"), frame)
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  with config.unlocked():
    config.data.update(source="footage", backend="files", eval_split="test", footage=dict(
        paths=[str(tmp_path)], class_names=[f"class {i}" for i in range(SYNTHETIC_CLASSES)]))
  config.eval.update(overlay_video=False, temporal_consistency=True)
  method = _OneSizeMethod(config, [])
  results = evaluator.evaluate(method, {}, config, workdir=None)
  assert results["num_frames"] == 5 and results["TC_pairs"] == 2 + 1
  assert method.log.count("new predictor") == 2
  said = capsys.readouterr().out
  assert (f"eval: video {tmp_path.name}: frame 3 is 24x16, the frames before it 16x24: each run "
          "of frames of one size is predicted as a shot of its own") in said


class _TwoPassMethod(_OneSizeMethod):
  """Two predictors per video, as DCFM's protocol passes (`method.video_predictors`)."""

  def video_predictors(self, variables, protocol_index):
    return [self.predictor(variables) for _ in range(2)]


def test_a_change_of_size_is_said_once_per_video_whatever_its_number_of_predictors(monkeypatch,
                                                                                   capsys):
  """Each of a video's predictors goes shot by shot; the note said it once per predictor."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.eval.update(overlay_video=False, temporal_consistency=True)
  pairs = [(still, brightness_labels(still)) for still in _mixed_sizes([(16, 24), (24, 16)])
           for _ in range(2)]
  monkeypatch.setattr(evaluator, "eval_videos",
                      lambda *args, **kwargs: [_Video("stills", 0, pairs)])
  results = evaluator.evaluate(_TwoPassMethod(config, []), {}, config, workdir=None)
  assert results["TC_pairs"] == 2 * (1 + 1)  # each pass's two shots, a pair each
  assert capsys.readouterr().out.count("eval: video stills: frame 2 is 24x16") == 1


def test_mvc_scores_each_shot_of_a_labelled_video_as_a_video(monkeypatch):
  """mVC's and VEC's windows need one size too: a video of two sizes is scored as its shots."""
  config = _config_with_scored_videos()
  config.eval.update(max_videos=1, vc_convention="dcfm")
  stills = _mixed_sizes([(16, 24), (24, 16)])  # two shots of a still camera each
  pairs = [(still, brightness_labels(still)) for still in stills for _ in range(17)]
  monkeypatch.setattr(evaluator, "eval_videos",
                      lambda *args, **kwargs: [_Video("stills", 0, pairs)])
  results = evaluator.evaluate(_OneSizeMethod(config, []), {}, config, workdir=None)

  expected = VideoConsistency(SYNTHETIC_CLASSES, windows=tuple(config.eval.windows),
                              vc_convention="dcfm")
  for shot in (pairs[:17], pairs[17:]):
    expected.add_video(np.stack([label for _, label in shot]),
                       np.stack([brightness_labels(frame) for frame, _ in shot]))
  assert expected.videos_scored == 2 and results["mVC_16"] == pytest.approx(1)
  for name, value in expected.summary().items():
    np.testing.assert_equal(results[name], value, err_msg=name)


class _DeviceRecordingPredictor(StreamingPredictor):
  """Answers each frame at once with its label-like map, recording the device its variables are
  on and the thread that pushes; `fail` raises at the first push once another predictor has
  recorded a frame (so that the others have started), `delay_s` slows each push."""

  def __init__(self, variables, record: list, fail: bool = False, delay_s: float = 0.0):
    self._device = next(iter(variables["w"].devices()))
    self._record, self._fail, self._delay_s, self._index = record, fail, delay_s, 0

  def push(self, frame):
    if self._fail:
      deadline = time.monotonic() + 30.0
      while not self._record and time.monotonic() < deadline:
        time.sleep(0.001)
      raise RuntimeError("device lost")
    time.sleep(self._delay_s)
    self._record.append((self._device, threading.current_thread().name))
    index, self._index = self._index, self._index + 1
    return [(index, brightness_labels(frame))]


def _recording_method(config, record: list, **predictor_kwargs) -> Method:
  method = _OneBehindMethod(config, [])
  method.predictor = lambda variables: _DeviceRecordingPredictor(variables, record,
                                                                 **predictor_kwargs)
  return method


def test_each_device_predicts_its_own_videos_in_a_thread_to_the_same_scores():
  """`eval.devices=2`: device k predicts videos k, k + 2, ... with its own copy of the variables,
  in a thread of its own; the merged scores are the one device's."""
  config = _config_with_scored_videos()
  config.data.synthetic.num_val_videos = 4
  variables = {"w": np.zeros(2, np.float32)}
  single, record = [], []
  alone = evaluator.evaluate(_recording_method(config, single), variables, config, workdir=None)
  config.eval.devices = 2
  together = evaluator.evaluate(_recording_method(config, record), variables, config,
                                workdir=None)
  assert {device for device, _ in single} == {jax.local_devices()[0]}
  per_device = {}
  for device, thread in record:
    per_device.setdefault(device, []).append(thread)
  assert set(per_device) == set(jax.local_devices()[:2])
  for threads in per_device.values():  # two videos of 20 frames each, in a thread of its own
    assert len(threads) == 40 and len(set(threads)) == 1
    assert threads[0].startswith("predict_device")
  assert len({threads[0] for threads in per_device.values()}) == 2
  _assert_same_scores(together, alone)


def _assert_same_scores(results: dict, expected: dict) -> None:
  """Every result but the timing equal; floats (mVC sums merged in another order) to 1e-12."""
  assert results.keys() == expected.keys()
  for name, value in expected.items():
    if name == "frames_per_s":
      continue
    if isinstance(value, list):
      assert len(results[name]) == len(value), name
      pairs = zip(results[name], value)
    else:
      pairs = [(results[name], value)]
    for got, want in pairs:
      if isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-12, nan_ok=True), name
      else:
        assert got == want, name


def test_a_failing_device_stops_the_others_and_its_error_is_raised():
  config = _config_with_scored_videos()
  config.data.synthetic.num_val_videos = 4
  config.eval.devices = 2
  record = []
  method = _OneBehindMethod(config, [])
  first = jax.local_devices()[0]
  method.predictor = lambda variables: _DeviceRecordingPredictor(
      variables, record, fail=first in variables["w"].devices(), delay_s=0.05)
  names = [video.name for video in eval_videos(config.data, config.data.eval_split)]
  with pytest.raises(RuntimeError, match="device lost") as raised:
    evaluator.evaluate(method, {"w": np.zeros(2, np.float32)}, config, workdir=None)
  assert f"while evaluating video {names[0]} of split 'val'" in raised.value.__notes__
  assert len(record) == 20  # the other device finished its video in progress, and no other


class _StopOnceEveryDeviceStarted(list):
  """A predictors' record whose devices each wait at their first frame until all have one, then
  request the stop: every device has a video in progress when it comes."""

  def __init__(self, devices: int):
    super().__init__()
    self._started = threading.Barrier(devices)
    self.stop = threading.Event()

  def append(self, item):
    first = item[0] not in {device for device, _ in self}
    super().append(item)
    if first:
      self._started.wait(timeout=30)
      self.stop.set()


@pytest.mark.parametrize("devices", [1, 2])
def test_a_stop_request_ends_the_evaluation_at_the_next_video_and_writes_nothing(tmp_path, capsys,
                                                                               devices):
  """A preemption during a periodic evaluation: every device's share ends after its video in
  progress, and no partial scores are written as the step's results."""
  config = _config_with_scored_videos()
  config.data.synthetic.num_val_videos = 4
  config.eval.update(devices=devices, overlay_video=True)
  first = next(iter(eval_videos(config.data, config.data.eval_split))).name
  earlier = tmp_path / f"overlay_{first}.mp4"  # an earlier evaluation's, which results.json names
  earlier.write_bytes(b"earlier")
  record = _StopOnceEveryDeviceStarted(devices)
  results = evaluator.evaluate(_recording_method(config, record), {"w": np.zeros(2, np.float32)},
                               config, workdir=str(tmp_path), step=7,
                               stop_requested=record.stop.is_set)
  assert results is None
  assert len(record) == 20 * devices  # each device's first video, then no other
  assert list(tmp_path.iterdir()) == [earlier] and earlier.read_bytes() == b"earlier"
  assert ("eval[val] of step 7 cut short by the stop request after "
          f"{devices} of 4 videos; no results written") in capsys.readouterr().out


def test_a_protocol_of_two_passes_counts_each_frame_once_and_predicts_it_twice():
  """DCFM's Cityscapes protocol predicts every frame once per pass (`video_predictors`): the
  results' num_frames counted each twice; frames/s still counts every prediction."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.data.backend = "files"
  config.eval.update(overlay_video=False, max_videos=1)
  log = []
  method = _OneBehindMethod(config, log)
  method.video_predictors = lambda variables, index: [method.predictor(variables) for _ in "ab"]
  results = evaluator.evaluate(method, {}, config, workdir=None)
  [video] = list(eval_videos(config.data, config.data.eval_split))[:1]
  assert results["num_frames"] == video.num_frames
  assert log.count(("push", 0)) == 2 and len(log) == 4 * video.num_frames


class _KeyframePredictor(_OneBehindPredictor):
  """`_OneBehindPredictor` as a keyframe method: its frames 0, 3, 6, ... are keyframes, answered
  with the frame's `brightness_labels`; the others are answered class 0 everywhere."""

  def keyframes(self):
    return list(range(0, self._index, 3))

  def push(self, frame):
    ready = super().push(frame)
    if (self._index - 1) % 3:
      self._held = (self._held[0], np.zeros(frame.shape[:2], np.int32))
    return ready


def test_a_keyframe_method_s_keyframes_and_other_frames_are_scored_apart_too():
  """`mIoU_keyframes` and `mIoU_non_key`: the mIoU (the config's convention) of each kind of
  frame the predictor reports (`StreamingPredictor.keyframes`); a method without keyframes
  reports neither. Both are in results.md's table."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.data.backend = "files"
  config.eval.update(overlay_video=False, max_videos=2)
  method = _OneBehindMethod(config, [])
  method.predictor = lambda variables: _KeyframePredictor([])
  results = evaluator.evaluate(method, {}, config, workdir=None)
  kinds = {"keyframes": ConfusionMatrix(SYNTHETIC_CLASSES),
           "non_key": ConfusionMatrix(SYNTHETIC_CLASSES)}
  for video in list(eval_videos(config.data, config.data.eval_split))[:2]:
    for t, (frame, label) in enumerate(video):
      key = t % 3 == 0
      kinds["keyframes" if key else "non_key"].update(
          label, brightness_labels(frame) if key else np.zeros_like(label))
  assert results["mIoU_keyframes"] == miou_vspw(kinds["keyframes"].matrix)
  assert results["mIoU_non_key"] == miou_vspw(kinds["non_key"].matrix)
  assert results["mIoU_keyframes"] != results["mIoU_non_key"]
  table = report.markdown_table(results)
  assert "| mIoU_keyframes (%) |" in table and "| mIoU_non_key (%) |" in table
  plain = evaluator.evaluate(_OneBehindMethod(config, []), {}, config, workdir=None)
  assert not {"mIoU_keyframes", "mIoU_non_key"} & set(plain)


def test_two_evaluations_in_one_workdir_write_their_overlays_apart(tmp_path):
  """`--mode=eval` while training evaluates in the same workdir: each settles its own overlay
  (they shared one provisional name: the second renamed the first's file, whose rename then
  raised and ended the training run)."""
  frames = [np.full((4, 6, 3), 9 * t, np.uint8) for t in range(2)]
  predictions = [np.zeros((4, 6), np.int32)] * 2
  palette = np.zeros((3, 3), np.uint8)
  write = lambda: evaluator._write_overlay(  # pylint: disable=protected-access
      tmp_path, "clip", frames, predictions, [None] * 2, fps=5, palette=palette)
  training, evaluation = write(), write()
  assert training != evaluation
  assert evaluator._settle_overlay(evaluation, keep=True) == tmp_path / "overlay_clip.mp4"
  assert evaluator._settle_overlay(training, keep=True) == tmp_path / "overlay_clip.mp4"
  cut_short = write()
  assert evaluator._settle_overlay(cut_short, keep=False) is None
  assert [p.name for p in tmp_path.iterdir()] == ["overlay_clip.mp4"]


def test_a_stop_requested_during_the_last_video_keeps_the_results():
  config = _config_with_scored_videos()  # 3 videos of 20 frames
  record = []
  results = evaluator.evaluate(_recording_method(config, record), {"w": np.zeros(2, np.float32)},
                               config, workdir=None, stop_requested=lambda: len(record) > 40)
  assert results is not None and results["num_videos"] == 3 and len(record) == 60


def test_a_real_model_on_four_devices_scores_as_on_one():
  """SegFormer's jitted predictor with a copy of the variables on each of 4 (CPU) devices."""
  quick_config = _config_with_scored_videos()
  quick_config.data.synthetic.num_val_videos = 5  # shares of 2, 1, 1, 1 videos
  method = get_method(quick_config)
  spec = batch_spec(quick_config)
  variables = jax.jit(method.init)(
      jax.random.key(0), {k: np.zeros(s.shape, s.dtype) for k, s in spec.items()})
  alone = evaluator.evaluate(method, variables, quick_config, workdir=None)
  quick_config.eval.devices = 4
  together = evaluator.evaluate(method, variables, quick_config, workdir=None)
  assert together["num_videos"] == 5
  _assert_same_scores(together, alone)


def test_frames_per_s_of_several_processes_is_all_their_frames_over_the_longest_time(monkeypatch):
  """Each process times its own share; the results report the whole evaluation's throughput (it
  was process 0's alone). Another process is stood in for by the gathers."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.data.backend = "files"
  config.data.synthetic.num_val_videos = 6  # 3 in this process (process 0 of 2)
  config.eval.overlay_video = False
  clock = FakeClock()
  monkeypatch.setattr(evaluator, "time", clock)
  monkeypatch.setattr(evaluator.jax, "process_count", lambda: 2)
  # This process: 3 videos of 6 frames, the first left out: 12 frames in 12 s. The other: 30
  # frames in 20 s.
  other = {"counts": [3, 36, 30, 0], "seconds": 20.0}  # videos, frames, timed, TC's videos
  monkeypatch.setattr(evaluator, "merge_across_processes", lambda accumulator: accumulator)
  monkeypatch.setattr(evaluator.multihost_utils, "process_allgather", lambda values: np.stack(
      [values, np.asarray(other["counts"] if values.size == 4 else [other["seconds"]],
                          values.dtype)]))
  method = _OneBehindMethod(config, [])
  costs = [(100.0, 100.0), (1.0, 1.0), (1.0, 1.0)]
  method.predictor = lambda variables: _TimedPredictor(clock, *costs.pop(0))
  results = evaluator.evaluate(method, {}, config, workdir=None)
  assert results["num_videos"] == 6 and results["num_frames"] == 18 + 36
  assert results["frames_per_s"] == pytest.approx((12 + 30) / 20.0)


def _stand_in_for_another_process(monkeypatch, other_accumulator):
  """Process 0 of 2, whose gathers return its own values and those of a process that pickled
  `other_accumulator` (padded to the gathered length, as that process pads)."""
  other = np.frombuffer(pickle.dumps(other_accumulator), np.uint8)
  monkeypatch.setattr(evaluator.jax, "process_count", lambda: 2)

  def allgather(values):
    if values.shape == (1,):  # the blobs' sizes
      return np.stack([values, np.array([other.size])])
    padded = np.zeros_like(values)
    padded[:other.size] = other
    return np.stack([values, padded])

  monkeypatch.setattr(evaluator.multihost_utils, "process_allgather", allgather)


def test_merging_across_processes_scores_as_one_process_that_saw_every_video(monkeypatch):
  """mIoU's confusion matrix, mVC/VEC's window sums and TC's pair sums go through the pickled
  gather: the merged accumulators equal one that scored both processes' videos (in order)."""
  rng = np.random.default_rng(0)

  def flicker(maps):  # a tenth of the pixels change class from frame to frame
    return np.where(rng.random(maps.shape) < 0.1, rng.integers(0, 4, maps.shape), maps)

  scenes = [np.repeat(rng.integers(0, 4, (1, 6, 5)), 17, axis=0) for _ in range(3)]
  videos = [(flicker(scene), flicker(scene)) for scene in scenes]

  def scored(which):
    confusion, consistency = ConfusionMatrix(4), VideoConsistency(4, windows=(8, 16))
    temporal = TemporalConsistency(4)
    for labels, predictions in which:
      for label, prediction in zip(labels, predictions):
        confusion.update(label, prediction)
      consistency.add_video(labels, predictions)
      temporal.add_video(list(predictions), lambda i: np.zeros((6, 5, 2), np.float32))
    return confusion, consistency, temporal

  everything = scored(videos)
  here, there = scored(videos[:1]), scored(videos[1:])  # the other process's blob is the longer
  for mine, theirs, whole in zip(here, there, everything):
    _stand_in_for_another_process(monkeypatch, theirs)
    merged = evaluator.merge_across_processes(mine)
    for name, value in whole.summary().items():
      assert merged.summary()[name] == pytest.approx(value, rel=1e-12), name
  assert everything[1].videos_scored == 3 and everything[2].pairs == 3 * 16
  assert all(np.isfinite(list(whole.summary().values())).all() for whole in everything)



def test_a_long_video_says_its_frames_go_on_where_no_video_line_would(capsys):
  """One long video (a footage clip) printed its progress line only at its end: a minute of
  silence for 795 frames on a CPU. Frames are said only after a quiet spell, not beside the video
  lines of a split of short videos."""
  shared = evaluator._Shared(evaluator.Progress("eval[test] video", 2, "videos"), None,
                             "eval[test]")
  start = time.perf_counter()
  for t in range(30):
    shared.frame_predicted(start + 0.5 * t)  # 15 s of frames: a line at 10 s only
  assert capsys.readouterr().out == "eval[test]: 21 frames predicted, 0/2 videos done\n"
  shared.video_done(30)
  capsys.readouterr()
  shared.frame_predicted(time.perf_counter() + 5.0)  # 5 s after the video's line: quiet
  assert capsys.readouterr().out == ""
