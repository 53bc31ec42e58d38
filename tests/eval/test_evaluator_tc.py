"""The evaluator's TC switch: flow direction on a translating scene, and the end-to-end plumbing
(config switch -> TemporalConsistency -> results JSON/Markdown) on the quick synthetic videos."""
import json

import cv2
import numpy as np
import pytest

from data_pipelines.loader import eval_videos
from data_pipelines.sources.base import DataError
from tests.conftest import SYNTHETIC_CLASSES, brightness_labels, load_config
from vssjax.errors import SetupError
from vssjax.eval import evaluator
from vssjax.flow import FlowProvider
from vssjax.methods.base import Method, StreamingPredictor
from vssjax.metrics.temporal_consistency import TemporalConsistency



class _ColourPredictor(StreamingPredictor):
  def __init__(self):
    self._index = 0

  def push(self, frame):
    index, self._index = self._index, self._index + 1
    return [(index, brightness_labels(frame))]


class _ColourMethod(Method):
  def init(self, rng, batch):
    raise NotImplementedError

  def loss_and_metrics(self, params, model_state, batch, rng):
    raise NotImplementedError

  def predictor(self, variables):
    return _ColourPredictor()


def test_pairs_use_the_flow_that_brings_the_next_frame_back():
  rng = np.random.default_rng(0)
  texture = cv2.GaussianBlur(rng.uniform(0, 255, (64, 96, 3)).astype(np.float32), (0, 0), 2.5)
  texture = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
  frames = [np.ascontiguousarray(texture[:, 8 + 3 * t:72 + 3 * t]) for t in range(3)]  # pans
  predictions = [brightness_labels(f) for f in frames]
  # Nearest warping: the released bilinear one also blends ids along this fragmented texture.
  tracked, exact, static = (TemporalConsistency(SYNTHETIC_CLASSES, "nearest") for _ in range(3))
  evaluator._add_temporal_pairs(tracked, FlowProvider("dis"), "val/pan", frames, predictions)
  pan_back = np.zeros((2, 64, 64, 2), np.float32)
  pan_back[..., 0] = -3.0  # frame t+1 sampled 3 px to the left reproduces frame t
  exact.add_video(predictions, lambda i: pan_back[i])
  static.add_video(predictions, lambda i: np.zeros_like(pan_back[i]))
  assert tracked.pairs == 2
  # A reversed flow would warp by twice the motion and score below no warping at all.
  assert tracked.summary()["TC"] == pytest.approx(exact.summary()["TC"], abs=0.02)
  assert tracked.summary()["TC"] > static.summary()["TC"] + 0.2


def test_a_bad_pair_raises_naming_the_video_and_frames():
  frames = [np.zeros((32, 32, 3), np.uint8)] * 3
  predictions = [np.zeros((32, 32), int)] * 2 + [np.full((32, 32), SYNTHETIC_CLASSES)]
  with pytest.raises(DataError, match=r"^video val/bad: frames 1-2: .*outside"):
    evaluator._add_temporal_pairs(TemporalConsistency(SYNTHETIC_CLASSES), FlowProvider("dis"),
                                  "val/bad", frames, predictions)


def test_evaluate_reports_tc_when_switched_on(tmp_path):
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.data.backend = "files"
  config.eval.update(temporal_consistency=True, overlay_video=False, max_videos=1)
  results = evaluator.evaluate(_ColourMethod(config), {}, config, workdir=str(tmp_path))

  [video] = list(eval_videos(config.data, config.data.eval_split))[:1]
  frames = [frame for frame, _ in video]
  expected = TemporalConsistency(SYNTHETIC_CLASSES)
  flows = [FlowProvider("dis").compute(b, a) for a, b in zip(frames, frames[1:])]
  expected.add_video([brightness_labels(f) for f in frames], lambda i: flows[i])
  assert 0 < results["TC"] < 1
  assert results["TC"] == pytest.approx(expected.summary()["TC"], abs=1e-12)
  assert json.loads((tmp_path / "results.json").read_text())["TC"] == results["TC"]
  assert f"| TC (%) | {100 * results['TC']:.2f} |" in (tmp_path / "results.md").read_text()
  assert results["TC_pairs"] == len(frames) - 1 == expected.pairs

  config.eval.temporal_consistency = False
  assert "TC" not in evaluator.evaluate(_ColourMethod(config), {}, config, workdir=None)


def test_tc_video_list_restricts_the_videos_tc_scores(tmp_path, monkeypatch):
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.data.backend = "files"
  config.eval.update(temporal_consistency=True, overlay_video=False, max_videos=2,
                     tc_video_list="some_list.txt")
  first, second = [v.name for v in eval_videos(config.data, config.data.eval_split)][:2]
  monkeypatch.setattr(evaluator, "read_list", lambda name: (second,))
  only_second = evaluator.evaluate(_ColourMethod(config), {}, config, workdir=None)
  assert only_second["TC_videos"] == 1
  config.eval.update(tc_video_list="", max_videos=1)
  assert first != second
  assert only_second["TC"] != evaluator.evaluate(_ColourMethod(config), {}, config,
                                                 workdir=None)["TC"]


def test_a_tc_video_list_naming_videos_the_split_lacks_is_refused_before_evaluating(monkeypatch):
  """Such names were skipped unsaid, and a list matching none left TC n/a "for one-frame videos".
  A refusal as a missing video of VSPW's split list is; the names listed show which."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.data.backend = "files"
  config.eval.update(temporal_consistency=True, overlay_video=False, max_videos=1,
                     tc_video_list="some_list.txt")
  names = [v.name for v in eval_videos(config.data, config.data.eval_split)]
  listed = (names[1], "not_a_video", "nor_this")
  monkeypatch.setattr(evaluator, "read_list", lambda name: listed)
  monkeypatch.setattr(evaluator, "_predict_shares", pytest.fail)  # refused before predicting
  with pytest.raises(SetupError, match=(
      r"^eval.tc_video_list: some_list.txt names 2 of its 3 videos that split 'val' of "
      r"data.source 'synthetic' does not hold \(nor_this, not_a_video\): fix the list")):
    evaluator.evaluate(_ColourMethod(config), {}, config, workdir=None)


def test_listed_videos_left_out_by_max_videos_leave_tc_na_saying_so(tmp_path, monkeypatch):
  """The list is checked against the whole split: an evaluation of part of it (eval.max_videos,
  as a process's shard) rightly leaves listed videos out, and results.md says that is why TC is
  n/a, not one-frame videos."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.data.backend = "files"
  config.eval.update(temporal_consistency=True, overlay_video=False, max_videos=1,
                     tc_video_list="some_list.txt")
  second = [v.name for v in eval_videos(config.data, config.data.eval_split)][1]
  monkeypatch.setattr(evaluator, "read_list", lambda name: (second,))
  results = evaluator.evaluate(_ColourMethod(config), {}, config, workdir=str(tmp_path))
  assert np.isnan(results["TC"]) and results["TC_pairs"] == results["TC_videos"] == 0
  table = (tmp_path / "results.md").read_text()
  assert "TC: n/a, no evaluated video is one eval.tc_video_list names (eval.max_videos" in table
  assert "one-frame" not in table



def test_the_videos_tc_scores_are_evaluated_whole_under_a_label_window(monkeypatch):
  """ETC's Cityscapes protocol: mIoU on the annotated frames alone (a label window) and TC on
  every consecutive pair of the listed snippets. The window cut the listed videos too, leaving TC
  no pair; it now keeps them whole and the others windowed, every label scored once either way."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.data.backend = "files"
  config.eval.update(temporal_consistency=True, overlay_video=False, max_videos=2,
                     tc_video_list="some_list.txt")
  first, second = list(eval_videos(config.data, config.data.eval_split))[:2]
  monkeypatch.setattr(evaluator, "read_list", lambda name: (second.name,))
  whole = evaluator.evaluate(_ColourMethod(config), {}, config, workdir=None)
  config.data.eval_label_window = (0, 0)
  windowed = evaluator.evaluate(_ColourMethod(config), {}, config, workdir=None)
  # Every synthetic frame is labelled: the first video is one window per frame, the second whole.
  assert windowed["num_videos"] == first.num_frames + 1
  assert windowed["num_frames"] == whole["num_frames"] == first.num_frames + second.num_frames
  assert windowed["TC_pairs"] == whole["TC_pairs"] == second.num_frames - 1
  assert windowed["TC"] == whole["TC"]
  assert windowed["scored_pixels"] == whole["scored_pixels"]
  assert windowed["mIoU"] == whole["mIoU"]


def test_tc_video_list_is_a_path_or_a_shipped_lists_name(tmp_path, monkeypatch):
  """A relative path was looked up among the shipped lists only."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.eval.update(temporal_consistency=True, tc_video_list="mine.txt")
  (tmp_path / "mine.txt").write_text("video_a\nvideo_b\n")
  monkeypatch.chdir(tmp_path)
  assert evaluator.make_scorers(config).tc_videos == {"video_a", "video_b"}
  config.eval.tc_video_list = "cityscapes_valsam.txt"
  assert len(evaluator.make_scorers(config).tc_videos) == 108
  config.eval.tc_video_list = "missing.txt"
  with pytest.raises(SetupError, match=r"^eval.tc_video_list: video list 'missing.txt': no file "
                     rf"{tmp_path}/missing.txt, nor a list of that name shipped in .*lists$"):
    evaluator.make_scorers(config)
