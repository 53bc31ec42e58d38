"""`--mode=infer`'s input reading and label PNGs (the whole mode runs in tests/test_main.py)."""

import json
import os
import shutil
import subprocess
import sys

import cv2
import jax
import numpy as np
import pytest
from PIL import Image

from data_pipelines import eval_transforms
from data_pipelines.sources import footage
from data_pipelines.transforms import pillow_resize
from tests.conftest import (REAL_CLIP_FRAMES, REPO, OneSizePredictor,
                            assert_later_sizes_traced_ahead, quick_config_reading, slow_down,
                            traced_functions)
from vssjax import configs_lib, infer, parallel
from vssjax.errors import SetupError
from vssjax.eval.shots import ShotPredictor
from vssjax.eval.stream import stream_predictions
from vssjax.flow import FlowProvider
from vssjax.metrics.temporal_consistency import TemporalConsistency
from vssjax.train import loop


@pytest.fixture(scope="module")
def trained_workdir(synthetic_data_dir, tmp_path_factory):
  """A workdir of the quick config trained once (2 steps) for this module's tests to infer with;
  each works on its own copy (`_copy_of`)."""
  workdir = tmp_path_factory.mktemp("trained") / "run"
  loop.train_and_evaluate(quick_config_reading(synthetic_data_dir), str(workdir))
  return workdir


def _copy_of(trained_workdir, path):
  shutil.copytree(trained_workdir, path)
  return path


def test_a_frame_folder_with_label_maps_beside_its_frames_reads_the_frames_only(tmp_path):
  """`python -m data_pipelines.make_vtest_pseudo` writes `<frame>_label.png` beside each frame:
  inferring on such a folder predicts its frames, not twice as many "frames"."""
  for t in range(2):
    cv2.imwrite(str(tmp_path / f"{t:06d}.jpg"), np.full((6, 8, 3), 50 * t, np.uint8))
    cv2.imwrite(str(tmp_path / f"{t:06d}_label.png"), np.zeros((6, 8), np.uint8))
  total, frames, frame_rate = infer.read_frames(str(tmp_path))
  frames = list(frames)
  assert total == 2 and [name for name, _ in frames] == ["000000", "000001"] and frame_rate == 0
  assert all(frame.shape == (6, 8, 3) for _, frame in frames)


def test_label_pngs_hold_the_class_ids_and_show_the_palette_colours(tmp_path):
  """Each frame's PNG reads back as class ids and shows the dataset's colours in any viewer."""
  palette = np.array([[128, 64, 128], [244, 35, 232], [70, 70, 70]], np.uint8)
  labels = np.array([[0, 1], [2, 255]], np.int32)
  infer.save_palette_png(tmp_path / "f.png", labels, palette)
  image = Image.open(tmp_path / "f.png")
  np.testing.assert_array_equal(np.asarray(image), labels)
  np.testing.assert_array_equal(np.asarray(image.convert("RGB")),
                                [[[128, 64, 128], [244, 35, 232]], [[70, 70, 70], [0, 0, 0]]])


def test_a_folder_of_frame_folders_and_video_files_is_each_of_them_in_name_order(tmp_path):
  """A dataset split's layout (one folder of frames per video) or a folder of clips: every video,
  each into its own infer/<name>/; other files are not videos."""
  for video in ("b_video", "a_video"):
    (tmp_path / video).mkdir()
    cv2.imwrite(str(tmp_path / video / "000000.jpg"), np.zeros((6, 8, 3), np.uint8))
  (tmp_path / "c_clip.MP4").write_bytes(b"")
  (tmp_path / "notes.txt").write_text("not a video")
  (tmp_path / "empty").mkdir()
  assert infer.input_videos(str(tmp_path)) == [
      str(tmp_path / name) for name in ("a_video", "b_video", "c_clip.MP4")]
  assert infer.input_videos(str(tmp_path / "a_video")) == [str(tmp_path / "a_video")]


def test_hidden_files_are_neither_frames_nor_videos(tmp_path):
  """macOS writes `._<name>` beside every file it copies to a foreign disk (a USB stick, a zip):
  undecodable, they are not frames of the folder nor videos of a folder of clips."""
  (tmp_path / "frames").mkdir()
  cv2.imwrite(str(tmp_path / "frames" / "000000.png"), np.zeros((6, 8, 3), np.uint8))
  (tmp_path / "frames" / "._000000.png").write_bytes(b"\0\5\26\7")
  (tmp_path / "clips").mkdir()
  (tmp_path / "clips" / "a.mp4").write_bytes(b"")
  (tmp_path / "clips" / "._a.mp4").write_bytes(b"\0\5\26\7")
  (tmp_path / "clips" / ".cache").mkdir()
  cv2.imwrite(str(tmp_path / "clips" / ".cache" / "000000.png"), np.zeros((6, 8, 3), np.uint8))
  total, frames, _ = infer.read_frames(str(tmp_path / "frames"))
  assert total == 1 and [name for name, _ in frames] == ["000000"]
  assert infer.input_videos(str(tmp_path / "clips")) == [str(tmp_path / "clips" / "a.mp4")]
  (tmp_path / "frames" / "000000.png").unlink()
  with pytest.raises(SetupError, match="holds no frames"):
    infer.input_videos(str(tmp_path / "frames"))


def test_vspw_video_folders_are_read_from_their_origin_frames(tmp_path, capsys):
  """VSPW keeps a video's frames in <video>/origin/ and its label maps in <video>/mask/: a video
  folder is one video of its origin/ frames, without a note calling origin/ and mask/ videos left
  out, and the split's data/ folder each of its videos."""
  for video in ("v2", "v1"):
    for sub, count in (("origin", 3), ("mask", 3)):
      (tmp_path / "data" / video / sub).mkdir(parents=True)
      for t in range(count):
        cv2.imwrite(str(tmp_path / "data" / video / sub / f"{t:08d}.png"),
                    np.full((6, 8, 3) if sub == "origin" else (6, 8), t, np.uint8))
  data = tmp_path / "data"
  assert infer.input_videos(str(data)) == [str(data / "v1"), str(data / "v2")]
  capsys.readouterr()
  assert infer.input_videos(str(data / "v1")) == [str(data / "v1")]
  total, frames, _ = infer.read_frames(str(data / "v1"))
  frames = list(frames)
  assert total == 3 and [frame.shape for _, frame in frames] == [(6, 8, 3)] * 3
  assert capsys.readouterr().out == ""


def test_files_of_formats_not_recognised_are_named_not_left_out_silently(tmp_path, capsys):
  """A clip of a container the folder listing does not know (`.flv`; given alone, OpenCV tries
  any), or a frame of an image format it does not (`.gif`), beside the others."""
  (tmp_path / "clips").mkdir()
  for name in ("a.mp4", "b.flv", "notes.txt"):
    (tmp_path / "clips" / name).write_bytes(b"")
  assert infer.input_videos(str(tmp_path / "clips")) == [str(tmp_path / "clips" / "a.mp4")]
  assert capsys.readouterr().out == (
      f"infer: {tmp_path}/clips: b.flv, notes.txt not predicted: not video files "
      f"({'/'.join(infer.VIDEO_SUFFIXES)}); pass one on its own for OpenCV to try\n")
  frames = tmp_path / "frames"
  _black_frames(frames, 1)
  for name in ("000001.gif", "000002.ppm", "000003.pgm", "000004.jp2"):
    (frames / name).write_bytes(b"")
  (frames / "clip.mp4").write_bytes(b"")  # named by input_videos' own note
  total, _, _ = infer.read_frames(str(frames))
  assert total == 1
  assert capsys.readouterr().out == (
      f"infer: {frames}: 000001.gif, 000002.ppm, 000003.pgm and 1 more not predicted: "
      f"not frames ({'/'.join(footage.IMAGE_SUFFIXES)})\n")


def test_a_folder_of_videos_names_its_folders_without_frames(tmp_path, capsys):
  """A folder of clips one level further down (or an empty one) beside the clips was left out
  without a word, where a file of another format was named."""
  (tmp_path / "clips" / "more" / "deeper").mkdir(parents=True)
  (tmp_path / "clips" / "more" / "deeper" / "c.mp4").write_bytes(b"")
  (tmp_path / "clips" / "a.mp4").write_bytes(b"")
  _black_frames(tmp_path / "clips" / "b", 1)
  assert infer.input_videos(str(tmp_path / "clips")) == [
      str(tmp_path / "clips" / "a.mp4"), str(tmp_path / "clips" / "b")]
  assert capsys.readouterr().out == (
      f"infer: {tmp_path}/clips: more not predicted: folders without frames (a folder of videos "
      "is read one level deep: pass such a folder on its own)\n")


def test_videos_that_would_share_an_output_folder_are_refused_naming_them(tmp_path):
  for name in ("clip.mp4", "clip.avi"):
    (tmp_path / name).write_bytes(b"")
  with pytest.raises(SetupError, match=r"several videos would write infer/clip/ \(.*clip.avi, "):
    infer.input_videos(str(tmp_path))


def test_frames_whose_names_differ_only_by_suffix_are_refused_naming_them(tmp_path):
  """a.jpg and a.png would both write labels/a.png, one's labels lost while the count said both
  were written; most often label maps beside their frames (0000.png by 0000.jpg)."""
  for name in ("a.png", "a.jpg", "b.png"):
    cv2.imwrite(str(tmp_path / name), np.zeros((6, 8, 3), np.uint8))
  with pytest.raises(SetupError, match=rf"--input {tmp_path}: several frames would write "
                     r"labels/a\.png \(a\.jpg, a\.png\); keep one frame of each name"):
    infer.read_frames(str(tmp_path))


def test_a_folders_frame_folder_of_clashing_names_is_refused_before_the_restore(
    quick_config, tmp_path, monkeypatch):
  """Each frame folder of a folder of videos has its frames' names checked before the checkpoint
  is restored and the videos before it predicted."""
  restores = []
  monkeypatch.setattr(loop, "restore_for_eval", lambda *args: restores.append(1))
  _black_frames(tmp_path / "in" / "a", 2)
  _black_frames(tmp_path / "in" / "b", 1)
  cv2.imwrite(str(tmp_path / "in" / "b" / "000000.jpg"), np.zeros((16, 16, 3), np.uint8))
  with pytest.raises(SetupError, match=r"in/b: several frames would write labels/000000\.png"):
    infer.run(quick_config, str(tmp_path), str(tmp_path / "in"))
  assert not restores and not (tmp_path / "infer").exists()


def test_a_workdir_infer_cannot_write_is_refused_before_the_restore(quick_config, tmp_path,
                                                                    monkeypatch):
  """A workdir shared read-only (simulated: root writes anywhere) was a PermissionError traceback
  after the checkpoint's restore."""
  restores = []
  monkeypatch.setattr(loop, "restore_for_eval", lambda *args: restores.append(1))
  _black_frames(tmp_path / "in", 1)
  (tmp_path / "run").mkdir()
  monkeypatch.setattr(os, "access", lambda path, mode: path != str(tmp_path / "run"))
  with pytest.raises(SetupError, match=r"run is not writable, and --mode=infer's outputs are "):
    infer.run(quick_config, str(tmp_path / "run"), str(tmp_path / "in"))
  assert not restores


def test_an_input_under_the_home_folder_may_be_given_with_a_tilde(quick_config, tmp_path,
                                                                 monkeypatch):
  """Bash expands no ~ after `=`: `--input=~/clip` comes as typed, and is the home's clip."""
  _restore_a_stub(monkeypatch, lambda: OneSizePredictor(_index_labels))
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  _black_frames(tmp_path / "home" / "clip", 2)
  (tmp_path / "run").mkdir()
  [out_dir] = infer.run(quick_config, str(tmp_path / "run"), "~/clip")
  assert out_dir == tmp_path / "run" / "infer" / "clip"
  assert len(list((out_dir / "labels").iterdir())) == 2


def test_a_folder_without_frames_or_videos_is_refused_naming_it(tmp_path):
  (tmp_path / "notes.txt").write_text("no frames here")
  with pytest.raises(SetupError, match=rf"--input {tmp_path} holds no frames .*no video files"):
    infer.input_videos(str(tmp_path))
  with pytest.raises(SetupError, match="does not exist"):
    infer.input_videos(str(tmp_path / "missing"))


def test_a_file_that_is_not_a_video_is_refused_before_any_frame_is_asked_for(tmp_path):
  """The file is opened when the input is read (before the checkpoint's restore), not at the
  first frame of the run."""
  path = tmp_path / "notes.txt"
  path.write_text("not a video")
  with pytest.raises(SetupError, match=f"--input {path}"):
    infer.read_frames(str(path))


def test_an_image_is_one_frame_named_after_it_and_a_corrupt_one_is_refused(
    quick_config, tmp_path, monkeypatch, capsys):
  """OpenCV decoded it as a video: 'its container declares no frame count', progress `1/?`, and
  labels/000000.png for street.png."""
  _restore_a_stub(monkeypatch, lambda: OneSizePredictor(_index_labels))
  image = tmp_path / "street.png"
  cv2.imwrite(str(image), np.zeros((8, 16, 3), np.uint8))
  [out_dir] = infer.run(quick_config, str(tmp_path), str(image))
  assert [path.name for path in (out_dir / "labels").iterdir()] == ["street.png"]
  said = capsys.readouterr().out
  assert f"infer: {image} (1 frame) with the checkpoint of step 7" in said
  assert "infer frame 1/1 " in said
  image.write_bytes(b"not a png")
  with pytest.raises(SetupError, match=f"--input {image}: cannot decode image"):
    infer.read_frames(str(image))


def _write_avi(path, frames, fps: float) -> None:
  """An MJPG .avi of `frames` (uint8 [H, W, 3], all one size) at `fps`."""
  height, width = frames[0].shape[:2]
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
  for frame in frames:
    writer.write(frame)
  writer.release()


def test_a_video_file_reads_every_frame_in_order(tmp_path):
  path = str(tmp_path / "clip.avi")
  _write_avi(path, [np.full((6, 8, 3), 80 * t, np.uint8) for t in range(3)], fps=5)
  total, frames, frame_rate = infer.read_frames(path)
  frames = list(frames)
  assert total == 3 and [name for name, _ in frames] == ["000000", "000001", "000002"]
  assert frame_rate == 5  # the video's own, for the overlay
  assert [int(round(frame.mean() / 80)) for _, frame in frames] == [0, 1, 2]


def test_infer_scores_label_free_tc_of_the_input_with_the_evaluators_flow_and_warp(
    quick_config, trained_workdir, tmp_path, real_video_clip, capsys):
  """With eval.temporal_consistency, infer scores each saved prediction against the next one
  warped back by the flow from the next frame to it: what the evaluator does for a video."""
  workdir = _copy_of(trained_workdir, tmp_path / "run")
  quick_config.eval.temporal_consistency = True
  [out_dir] = infer.run(quick_config, str(workdir), str(real_video_clip))
  labels = sorted((out_dir / "labels").iterdir())  # vtest.avi: one PNG a frame at 768x576
  assert len(labels) == REAL_CLIP_FRAMES and Image.open(labels[-1]).size == (768, 576)
  overlay = cv2.VideoCapture(str(out_dir / "overlay.mp4"))
  assert int(overlay.get(cv2.CAP_PROP_FRAME_COUNT)) == REAL_CLIP_FRAMES
  record = json.loads((out_dir / "tc.json").read_text())
  assert record["pairs"] == REAL_CLIP_FRAMES - 1
  assert record["flow"] == "dis" and record["warp"] == "bilinear"
  assert "infer: TC (label-free temporal consistency)" in capsys.readouterr().out

  _, frames, _ = infer.read_frames(str(real_video_clip))
  frames = [frame for _, frame in frames]
  labels = [np.asarray(Image.open(path)) for path in sorted((out_dir / "labels").iterdir())]
  expected = TemporalConsistency(quick_config.data.num_classes)
  flow = FlowProvider("dis")
  expected.add_video(labels, lambda i: flow.compute(frames[i + 1], frames[i]))
  assert 0 < record["TC"] < 1
  assert record["TC"] == pytest.approx(expected.summary()["TC"])


def test_a_folder_of_videos_is_inferred_video_by_video_with_one_restore(
    quick_config, trained_workdir, tmp_path, monkeypatch, capsys):
  """Each video of the folder gets its own fresh predictor, output folder and TC; the checkpoint
  is restored once for all."""
  _copy_of(trained_workdir, tmp_path / "run")
  rng = np.random.default_rng(0)
  for video, count in (("a", 2), ("b", 3)):
    (tmp_path / "in" / video).mkdir(parents=True)
    for t in range(count):
      cv2.imwrite(str(tmp_path / "in" / video / f"{t:06d}.png"),
                  rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
  restores = []
  restore = loop.restore_for_eval
  monkeypatch.setattr(loop, "restore_for_eval", lambda *a: restores.append(1) or restore(*a))
  quick_config.eval.temporal_consistency = True
  out_dirs = infer.run(quick_config, str(tmp_path / "run"), str(tmp_path / "in"))
  assert [d.name for d in out_dirs] == ["a", "b"] and len(restores) == 1
  assert [len(list((d / "labels").iterdir())) for d in out_dirs] == [2, 3]
  said = capsys.readouterr().out
  assert "infer: 2 videos in" in said
  assert f"infer: video 2/2: {tmp_path / 'in' / 'b'} (3 frames) with the checkpoint" in said
  # TC of each video, and of both as one split: the pairs of both (1 + 2), not a mean of means.
  per_video = [json.loads((d / "tc.json").read_text()) for d in out_dirs]
  together = json.loads((tmp_path / "run" / "infer" / "tc_in.json").read_text())
  assert [r["pairs"] for r in per_video] == [1, 2] and together["pairs"] == 3
  expected = TemporalConsistency(quick_config.data.num_classes)
  flow = FlowProvider("dis")
  for video, out_dir in zip(("a", "b"), out_dirs):
    frames = [frame for _, frame in infer.read_frames(str(tmp_path / "in" / video)).frames]
    labels = [np.asarray(Image.open(path)) for path in sorted((out_dir / "labels").iterdir())]
    expected.add_video(labels, lambda i, f=frames: flow.compute(f[i + 1], f[i]))
  assert together["TC"] == pytest.approx(expected.summary()["TC"])


def _rng_frames(folder, sizes) -> list[np.ndarray]:
  """A folder of random frames of `sizes` (h, w), in order; returns them as RGB."""
  folder.mkdir(parents=True)
  rng = np.random.default_rng(0)
  frames = [rng.integers(0, 256, hw + (3,), dtype=np.uint8) for hw in sizes]
  for t, frame in enumerate(frames):
    cv2.imwrite(str(folder / f"{t:06d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  return frames


def _back_at(labels, hw):
  """A label map of the exact size brought back to a frame's (h, w), as infer does."""
  return pillow_resize(labels.astype(np.int32), hw, Image.Resampling.NEAREST)


def test_infer_predicts_at_the_exact_size_as_eval_and_writes_at_the_frames_size(
    quick_config, trained_workdir, tmp_path):
  """With `data.eval_transform.exact_size` (DCFM's VSPW protocol), infer predicts each frame
  resized as the evaluator reads it: its labels are the evaluator's predictor's on that frame,
  brought back (nearest) to the frame's own size."""
  workdir = _copy_of(trained_workdir, tmp_path / "run")
  frames = _rng_frames(tmp_path / "frames", [(40, 56)] * 3)
  quick_config.data.eval_transform.exact_size = (24, 72)
  [out_dir] = infer.run(quick_config, str(workdir), str(tmp_path / "frames"))

  method, variables, _ = loop.restore_for_eval(quick_config, str(workdir), None)
  predictor = ShotPredictor(method.video_predictors(variables, 0)[0],
                            lambda: method.video_predictors(variables, 0)[0], None)
  resized = [eval_transforms.resize_exact(frame, None, (24, 72))[0] for frame in frames]
  expected = [_back_at(labels, (40, 56))
              for _, _, labels in stream_predictions(predictor, (("", f) for f in resized),
                                                     method.num_classes)]
  written = [np.asarray(Image.open(out_dir / "labels" / f"{t:06d}.png")) for t in range(3)]
  np.testing.assert_array_equal(written, expected)


def test_at_an_exact_size_every_frame_is_pushed_at_it_and_its_labels_come_back_at_its_own(
    quick_config, tmp_path, monkeypatch, capsys):
  """Frames of any size are pushed at `exact_size` (one predictor for them all, as the evaluator
  reads a video); each label PNG is the prediction resized back to its frame's size."""
  pushed = []

  def labels_of(frame, index):
    pushed.append(frame.shape)
    h, w = frame.shape[:2]
    return (np.arange(h)[:, None] + 2 * np.arange(w)[None] + index) % 5

  _restore_a_stub(monkeypatch, lambda: OneSizePredictor(labels_of))
  sizes = [(16, 24), (24, 16), (16, 24)]
  _rng_frames(tmp_path / "frames", sizes)
  quick_config.data.eval_transform.exact_size = (12, 20)
  [out_dir] = infer.run(quick_config, str(tmp_path), str(tmp_path / "frames"))
  assert pushed == [(12, 20, 3)] * 3
  for t, hw in enumerate(sizes):
    np.testing.assert_array_equal(np.asarray(Image.open(out_dir / "labels" / f"{t:06d}.png")),
                                  _back_at(labels_of(np.zeros((12, 20, 3)), t), hw))
  assert "predicted resized to 12x20 (data.eval_transform.exact_size" in capsys.readouterr().out


def _restore_a_stub(monkeypatch, make_predictor):
  """`loop.restore_for_eval` gives, as step 7's, a method whose predictors `make_predictor()`
  makes: infer's own logic without a trained model."""

  class Method:
    predictor = staticmethod(lambda variables: make_predictor())

  monkeypatch.setattr(loop, "restore_for_eval", lambda *args: (Method(), None, 7))


def _black_frames(folder, count: int):
  """A folder of `count` black 16x16 PNG frames."""
  folder.mkdir(parents=True)
  for t in range(count):
    cv2.imwrite(str(folder / f"{t:06d}.png"), np.zeros((16, 16, 3), np.uint8))
  return folder


class _AnswersPairsBackwards:
  """A predictor of the documented contract that answers frames out of order: nothing for an
  even frame, then the odd one and the even one before it (label map of frame i: LABELS[i])."""
  LABELS = (0, 1, 2, 3)

  def __init__(self):
    self._held = []

  def push(self, frame):
    index = len(self._held)
    self._held.append((index, np.full(frame.shape[:2], self.LABELS[index], np.int32)))
    return self._held[-1:-3:-1] if index % 2 else []

  def flush(self):
    return []


def test_infer_writes_and_scores_the_frames_in_order_whatever_order_a_predictor_answers(
    quick_config, tmp_path, monkeypatch):
  """The overlay video and TC's pairs follow the frames' order, not the order of the answers
  (the evaluator sorts them likewise)."""
  _restore_a_stub(monkeypatch, _AnswersPairsBackwards)
  overlaid = []
  real_overlay = infer.visualize.overlay
  monkeypatch.setattr(infer.visualize, "overlay", lambda frame, labels, palette: (
      overlaid.append(int(labels[0, 0])) or real_overlay(frame, labels, palette)))
  frames = tmp_path / "frames"
  frames.mkdir()
  still = np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)  # zero flow
  for t in range(4):
    cv2.imwrite(str(frames / f"{t:06d}.png"), still)
  quick_config.eval.temporal_consistency = True
  [out_dir] = infer.run(quick_config, str(tmp_path), str(frames))

  labels = list(_AnswersPairsBackwards.LABELS)
  assert overlaid == labels
  assert [int(np.asarray(Image.open(out_dir / "labels" / f"{t:06d}.png"))[0, 0])
          for t in range(4)] == labels
  expected = TemporalConsistency(quick_config.data.num_classes)
  expected.add_video([np.full((32, 32), label) for label in labels],
                     lambda i: np.zeros((32, 32, 2), np.float32))
  record = json.loads((out_dir / "tc.json").read_text())
  assert record["pairs"] == 3 and record["TC"] == pytest.approx(expected.summary()["TC"])


def _index_labels(frame, index):
  """Frame `index`'s label map: `index` everywhere."""
  return np.full(frame.shape[:2], index, np.int32)


def test_a_frame_folder_of_mixed_sizes_is_predicted_shot_by_shot(quick_config, tmp_path,
                                                                 monkeypatch, capsys):
  """DCFM and SD-CPC cannot relate frames of different network input sizes: each run of frames of
  one size goes through a fresh predictor, its labels at its frames' size, in the video's order,
  TC scoring the pairs within a run only."""
  _restore_a_stub(monkeypatch, lambda: OneSizePredictor(_index_labels))
  frames = tmp_path / "frames"
  frames.mkdir()
  sizes = [(16, 24), (16, 24), (24, 16), (16, 24), (16, 24)]
  for t, hw in enumerate(sizes):
    cv2.imwrite(str(frames / f"{t:06d}.png"), np.zeros(hw + (3,), np.uint8))
  quick_config.eval.temporal_consistency = True
  [out_dir] = infer.run(quick_config, str(tmp_path), str(frames))
  labels = [np.asarray(Image.open(out_dir / "labels" / f"{t:06d}.png")) for t in range(5)]
  assert [label.shape for label in labels] == sizes
  assert [int(label[0, 0]) for label in labels] == [0, 1, 0, 0, 1]  # each shot's own indices
  assert json.loads((out_dir / "tc.json").read_text())["pairs"] == 2
  said = capsys.readouterr().out
  assert "frame 000002 is 24x16, the frames before it 16x24: each run of frames" in said
  assert said.count("each run of frames of one size") == 1
  # Three frames, none of its neighbours' size: no pair to score, as of a single frame.
  for t, hw in enumerate([(16, 24), (24, 16), (16, 24)]):
    cv2.imwrite(str(frames / f"{t:06d}.png"), np.zeros(hw + (3,), np.uint8))
  for t in (3, 4):
    (frames / f"{t:06d}.png").unlink()
  infer.run(quick_config, str(tmp_path), str(frames))
  assert ("TC (label-free temporal consistency) n/a (no two consecutive frames of one size) over "
          "0 frame pairs" in capsys.readouterr().out)


def test_a_rerun_without_tc_leaves_no_earlier_tc_json(quick_config, tmp_path, monkeypatch):
  """tc.json scores the labels beside it: a later run that does not score TC (another checkpoint,
  say) removes the earlier run's rather than leave it to pass for its own."""
  _restore_a_stub(monkeypatch, _AnswersPairsBackwards)
  frames = _black_frames(tmp_path / "frames", 2)
  quick_config.eval.temporal_consistency = True
  [out_dir] = infer.run(quick_config, str(tmp_path), str(frames))
  assert (out_dir / "tc.json").exists()
  quick_config.eval.temporal_consistency = False
  infer.run(quick_config, str(tmp_path), str(frames))
  assert not (out_dir / "tc.json").exists()


def test_a_rerun_without_tc_leaves_no_earlier_tc_of_the_folder(quick_config, tmp_path,
                                                               monkeypatch):
  """infer/tc_<folder>.json scores the videos' labels together: a later run of the folder that
  does not score TC removes it, as it removes each video's tc.json."""
  _restore_a_stub(monkeypatch, _AnswersPairsBackwards)
  for video in ("a", "b"):
    _black_frames(tmp_path / "in" / video, 2)
  quick_config.eval.temporal_consistency = True
  infer.run(quick_config, str(tmp_path), str(tmp_path / "in"))
  together = tmp_path / "infer" / "tc_in.json"
  assert together.exists()
  quick_config.eval.temporal_consistency = False
  infer.run(quick_config, str(tmp_path), str(tmp_path / "in"))
  assert not together.exists()


def _labels_until(error: BaseException, at: int):
  """Frame i's label map `i` (`_index_labels`), until frame `at`, which raises `error`."""

  def labels_of(frame, index):
    if index == at:
      raise error
    return _index_labels(frame, index)

  return labels_of


def _outputs(folder) -> dict[str, bytes]:
  """Every file under `folder` (its hidden ones too) by its path there: what a run left."""
  return {str(path.relative_to(folder)): path.read_bytes()
          for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("error", [KeyboardInterrupt(), ValueError("a bad frame")])
def test_a_rerun_that_stops_midway_leaves_the_earlier_runs_outputs_whole(quick_config, tmp_path,
                                                                        monkeypatch, error):
  """Outputs are written into a hidden staging folder and swapped in once complete: a re-run
  interrupted (Ctrl-C) or failed at its third frame leaves the earlier run's label PNGs, overlay
  and TC as they were, none of its own PNGs among them and no truncated file."""
  frames = _black_frames(tmp_path / "frames", 4)
  quick_config.eval.temporal_consistency = True
  _restore_a_stub(monkeypatch, lambda: OneSizePredictor(_index_labels))
  [out_dir] = infer.run(quick_config, str(tmp_path), str(frames))
  earlier = _outputs(tmp_path / "infer")
  assert sorted(earlier) == [f"frames/labels/{t:06d}.png" for t in range(4)] + [
      "frames/overlay.mp4", "frames/run.json", "frames/tc.json"]
  _restore_a_stub(monkeypatch, lambda: OneSizePredictor(_labels_until(error, 2)))
  with pytest.raises(type(error)) as raised:
    infer.run(quick_config, str(tmp_path), str(frames))
  assert raised.value is error  # the predictor's, at frame 2: not a refusal before any frame
  assert _outputs(tmp_path / "infer") == earlier  # the staging folder removed too
  assert sorted(p.name for p in (tmp_path / "infer").iterdir()) == [out_dir.name]


def test_a_first_run_that_stops_midway_leaves_no_outputs(quick_config, tmp_path, monkeypatch):
  """Without an earlier run, an interrupted one leaves nothing under the outputs' names (no
  `infer/<name>/` that a later look would take for a run's)."""
  frames = _black_frames(tmp_path / "frames", 4)
  _restore_a_stub(monkeypatch, lambda: OneSizePredictor(_labels_until(KeyboardInterrupt(), 2)))
  with pytest.raises(KeyboardInterrupt):
    infer.run(quick_config, str(tmp_path), str(frames))
  assert not list((tmp_path / "infer").iterdir())


# A run of `infer` killed outright (SIGKILL) while it writes the outputs of
# `<workdir>/infer/frames`.
_KILLED_MIDWAY = """
import os, signal, sys
from etils import epath
from vssjax import infer

workdir = sys.argv[1]
with infer._staging_folder(epath.Path(workdir) / "infer" / "frames", workdir) as staging:
  (staging / "labels" / "000000.png").write_bytes(b"a label PNG")
  os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_staging_folder_of_a_killed_run_is_removed_by_the_next_run_of_that_video(
    quick_config, tmp_path, monkeypatch, capsys):
  """A run killed outright (kill -9, out of memory) leaves its hidden staging folder, which may
  hold a whole video's PNGs: the next run of that video removes it, saying so, and leaves the
  folder of a run still writing (its lock held) and those of other videos."""
  killed = subprocess.run([sys.executable, "-c", _KILLED_MIDWAY, str(tmp_path)], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                          text=True, timeout=120)
  assert killed.returncode == -9, killed.stderr
  [left] = (tmp_path / "infer").iterdir()
  assert left.name.startswith(".frames.") and (left / "labels" / "000000.png").is_file()
  other_video = tmp_path / "infer" / f".frames2.{'0' * 32}.partial"
  other_video.mkdir()
  (other_video / ".writing").touch()  # free, but another video's: its own next run removes it
  frames = _black_frames(tmp_path / "frames", 2)
  _restore_a_stub(monkeypatch, lambda: OneSizePredictor(_index_labels))
  out_dir = tmp_path / "infer" / "frames"
  with infer._staging_folder(out_dir, str(tmp_path)) as writing:  # another run's, under way
    infer.run(quick_config, str(tmp_path), str(frames))
    assert sorted(p.name for p in (tmp_path / "infer").iterdir()) == [
        writing.name, other_video.name, "frames"]
  out = capsys.readouterr().out
  assert f"infer: removing {left}: the outputs of a run of frames that was stopped outright" in out
  assert sorted(p.name for p in (out_dir / "labels").iterdir()) == ["000000.png", "000001.png"]


def test_run_json_records_the_settings_that_differ_from_the_trainings(quick_config, tmp_path,
                                                                      monkeypatch, capsys):
  """Predictions made with another setting than the checkpoint's (DCFM's `:k=6`) read as the
  trained ones: the fields that differ are printed and kept in run.json, as eval keeps them."""
  configs_lib.write_record(quick_config, str(tmp_path))
  _restore_a_stub(monkeypatch, lambda: OneSizePredictor(_index_labels))
  [out_dir] = infer.run(quick_config, str(tmp_path), str(_black_frames(tmp_path / "a", 2)))
  assert "config_changes" not in json.loads((out_dir / "run.json").read_text())
  trained_fps, quick_config.eval.overlay_fps = quick_config.eval.overlay_fps, 3
  infer.run(quick_config, str(tmp_path), str(tmp_path / "a"))
  assert json.loads((out_dir / "run.json").read_text())["config_changes"] == [
      f"eval.overlay_fps: {json.dumps(trained_fps)} -> 3"]
  assert "predicting with config fields that differ" in capsys.readouterr().out


def test_a_rerun_replaces_the_earlier_label_pngs_once_complete_and_says_so(quick_config, tmp_path,
                                                                         monkeypatch, capsys):
  """A complete re-run (a later checkpoint, another input of that name) leaves only its own
  frames' label maps, and says how many of an earlier run's it replaced."""
  _restore_a_stub(monkeypatch, lambda: OneSizePredictor(_index_labels))
  [out_dir] = infer.run(quick_config, str(tmp_path), str(_black_frames(tmp_path / "a" / "clip", 3)))
  assert "of an earlier run" not in capsys.readouterr().out
  first = json.loads((out_dir / "run.json").read_text())
  assert first["input"] == str(tmp_path / "a" / "clip") and first["frames"] == 3
  infer.run(quick_config, str(tmp_path), str(_black_frames(tmp_path / "b" / "clip", 2)))
  assert sorted(p.name for p in (out_dir / "labels").iterdir()) == ["000000.png", "000001.png"]
  assert sorted(p.name for p in (tmp_path / "infer").iterdir()) == ["clip"]
  assert json.loads((out_dir / "run.json").read_text()) == dict(
      first, input=str(tmp_path / "b" / "clip"), frames=2)
  said = capsys.readouterr().out
  assert (f"replacing the 3 label PNGs of an earlier run (step {first['step']}, input "
          f"{tmp_path / 'a' / 'clip'}) in {out_dir / 'labels'}") in said
  assert f"wrote 2 label PNGs to {out_dir / 'labels'} and {out_dir / 'overlay.mp4'}" in said


def test_a_folder_rerun_that_fails_before_a_video_is_replaced_keeps_the_folders_tc(
    quick_config, tmp_path, monkeypatch):
  """infer/tc_<folder>.json goes only once a video's outputs are replaced: a re-run that fails in
  its first video leaves it, as it leaves that video's outputs."""
  _restore_a_stub(monkeypatch, lambda: OneSizePredictor(_index_labels))
  for video in ("a", "b"):
    _black_frames(tmp_path / "in" / video, 2)
  quick_config.eval.temporal_consistency = True
  infer.run(quick_config, str(tmp_path), str(tmp_path / "in"))
  earlier = _outputs(tmp_path / "infer")
  assert "tc_in.json" in earlier
  _restore_a_stub(monkeypatch, lambda: OneSizePredictor(_labels_until(ValueError("bad"), 1)))
  with pytest.raises(ValueError, match="^bad$"):  # the predictor's, not a refusal up front
    infer.run(quick_config, str(tmp_path), str(tmp_path / "in"))
  assert _outputs(tmp_path / "infer") == earlier


def test_a_folders_clip_that_does_not_decode_is_refused_before_the_restore(quick_config, tmp_path,
                                                                           monkeypatch):
  """A corrupt clip late in a folder fails the run before the checkpoint is restored and before
  any video is predicted, not after hours of the videos before it."""
  restores = []
  monkeypatch.setattr(loop, "restore_for_eval", lambda *args: restores.append(1))
  (tmp_path / "in" / "a").mkdir(parents=True)
  cv2.imwrite(str(tmp_path / "in" / "a" / "000000.png"), np.zeros((16, 16, 3), np.uint8))
  (tmp_path / "in" / "b.mp4").write_text("not a video")
  with pytest.raises(SetupError, match=r"b\.mp4"):
    infer.run(quick_config, str(tmp_path), str(tmp_path / "in"))
  assert not restores and not (tmp_path / "infer").exists()


def test_a_folders_later_clips_are_decoded_and_closed_again_before_the_restore(quick_config,
                                                                               tmp_path,
                                                                               monkeypatch):
  """The check of a folder's later clips decodes each one's first frame and closes its file: by
  the restore, only the first clip (whose frames the run goes on with) is open."""
  (tmp_path / "in").mkdir()
  for name in ("a", "b", "c"):
    _write_avi(tmp_path / "in" / f"{name}.avi", [np.zeros((16, 16, 3), np.uint8)], fps=5)
  captures = []
  real_capture = cv2.VideoCapture

  class Tracked:
    def __init__(self, path):
      self._capture, self.path, self.released = real_capture(path), path, False
      captures.append(self)

    def __getattr__(self, name):
      return getattr(self._capture, name)

    def release(self):
      self.released = True
      self._capture.release()

  monkeypatch.setattr(cv2, "VideoCapture", Tracked)
  open_at_restore = []

  def restore(*args):
    open_at_restore.extend(os.path.basename(c.path) for c in captures if not c.released)
    raise RuntimeError("stop here")

  monkeypatch.setattr(loop, "restore_for_eval", restore)
  with pytest.raises(RuntimeError, match="stop here"):
    infer.run(quick_config, str(tmp_path), str(tmp_path / "in"))
  assert {os.path.basename(c.path) for c in captures} == {"a.avi", "b.avi", "c.avi"}
  assert open_at_restore == ["a.avi"]


def test_a_frame_folder_beside_other_videos_is_one_video_and_names_those_left_out(tmp_path,
                                                                                 capsys):
  """Frames win over the frame folders and clips beside them (a clip's extracted frames with the
  clip itself), but what is not predicted is said, not skipped silently."""
  cv2.imwrite(str(tmp_path / "000000.jpg"), np.zeros((6, 8, 3), np.uint8))
  (tmp_path / "sub").mkdir()
  cv2.imwrite(str(tmp_path / "sub" / "000000.jpg"), np.zeros((6, 8, 3), np.uint8))
  (tmp_path / "clip.mp4").write_bytes(b"")
  assert infer.input_videos(str(tmp_path)) == [str(tmp_path)]
  assert "its 2 other videos (clip.mp4, sub) are not predicted" in capsys.readouterr().out


def test_a_folders_output_name_is_its_whole_name(tmp_path, monkeypatch):
  """Dots in a frame folder's name are not a suffix: clip.v1/ and clip.v2/ write apart, and
  `--input=.` or a trailing slash names the folder itself (infer/tc_<folder>.json, not tc_.json)."""
  for video in ("clip.v1", "clip.v2"):
    (tmp_path / video).mkdir()
    cv2.imwrite(str(tmp_path / video / "000000.jpg"), np.zeros((6, 8, 3), np.uint8))
  name = footage.video_name
  assert [name(video) for video in infer.input_videos(str(tmp_path))] == ["clip.v1", "clip.v2"]
  monkeypatch.chdir(tmp_path / "clip.v1")
  assert name(".") == name(f"{tmp_path}/clip.v1/") == "clip.v1"
  # A VSPW video's frames folder is named after the video: each wrote infer/origin/ over the last.
  (tmp_path / "data" / "2001_c" / "origin").mkdir(parents=True)
  assert name(f"{tmp_path}/data/2001_c/origin/") == "2001_c"


def test_a_video_that_stops_decoding_early_is_said_so(quick_config, tmp_path, monkeypatch, capsys):
  """OpenCV ends a truncated file at its first broken frame as if it were the last: the frames
  predicted are set against those the container declares, so the shortfall is not silent."""
  _restore_a_stub(monkeypatch, _AnswersPairsBackwards)
  rng = np.random.default_rng(0)
  _write_avi(tmp_path / "full.avi",
             [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(20)], fps=10)
  data = (tmp_path / "full.avi").read_bytes()
  (tmp_path / "cut.avi").write_bytes(data[:len(data) // 2])
  monkeypatch.setattr(_AnswersPairsBackwards, "LABELS", (0, 1) * 10)
  [out_dir] = infer.run(quick_config, str(tmp_path), str(tmp_path / "cut.avi"))
  decoded = len(list((out_dir / "labels").iterdir()))
  assert 0 < decoded < 20
  assert f"declares 20 frames but decoding stopped after {decoded}" in capsys.readouterr().out


def test_several_processes_share_out_the_videos_and_process_0_writes_their_joint_tc(
    quick_config, trained_workdir, tmp_path, monkeypatch):
  """Run by every process of a pod, infer predicts each video once: process p takes videos
  p, p + P, ...; their joint TC is merged across processes and written by process 0 only."""
  _copy_of(trained_workdir, tmp_path / "run")
  for video in ("a", "b", "c"):
    (tmp_path / "in" / video).mkdir(parents=True)
    for t in range(2):
      cv2.imwrite(str(tmp_path / "in" / video / f"{t:06d}.png"), np.zeros((16, 16, 3), np.uint8))
  merged = []
  monkeypatch.setattr(infer, "merge_across_processes", lambda tc: merged.append(tc.pairs) or tc)
  quick_config.eval.temporal_consistency = True
  for index, expected in ((1, ["b"]), (0, ["a", "c"])):
    monkeypatch.setattr(infer, "_process", lambda index=index: (index, 2))
    out_dirs = infer.run(quick_config, str(tmp_path / "run"), str(tmp_path / "in"))
    assert [d.name for d in out_dirs] == expected
    assert (tmp_path / "run" / "infer" / "tc_in.json").exists() == (index == 0)
  assert merged == [1, 2]  # each process's own pairs go to the merge



@pytest.mark.parametrize("declared", [20, 3, 0])
def test_a_wrong_declared_frame_count_is_shown_as_an_estimate_and_the_decoded_frames_count(
    quick_config, tmp_path, monkeypatch, capsys, declared):
  """A container's frame count may be more (a truncated file), fewer or none: it is said to be
  the container's, its progress total shown as `~N` (`?` once passed), and the last progress line
  counts the frames decoded, every one of them predicted."""
  _restore_a_stub(monkeypatch, lambda: OneSizePredictor(_index_labels))
  path = tmp_path / "clip.avi"
  _write_avi(path, [np.zeros((8, 16, 3), np.uint8)] * 6, fps=10)
  monkeypatch.setattr(infer.footage, "declared_frames_and_rate", lambda _: (declared, 10.0))
  [out_dir] = infer.run(quick_config, str(tmp_path), str(path))
  assert len(list((out_dir / "labels").iterdir())) == 6
  said = capsys.readouterr().out
  assert (f"({declared} frames as its container declares)" if declared
          else "(its container declares no frame count)") in said
  lines = [line for line in said.splitlines() if line.startswith("infer frame ")]
  assert lines[-1].startswith("infer frame 6/6 ")
  assert all(line.split()[2].split("/")[1] in (f"~{declared}", "?") for line in lines[:-1])


def test_the_overlay_of_a_video_file_plays_at_the_videos_own_frame_rate(quick_config, tmp_path,
                                                                        monkeypatch):
  """A video file's overlay plays at the rate its container declares (5 fps here), not at
  eval.overlay_fps (for frame folders, which declare none): else it would play too fast or too
  slow beside the video it annotates."""
  _restore_a_stub(monkeypatch, lambda: OneSizePredictor(_index_labels))
  path = tmp_path / "clip.avi"
  _write_avi(path, [np.zeros((8, 16, 3), np.uint8)] * 3, fps=5)
  assert quick_config.eval.overlay_fps != 5
  [out_dir] = infer.run(quick_config, str(tmp_path), str(path))
  overlay = cv2.VideoCapture(str(out_dir / "overlay.mp4"))
  try:
    assert overlay.isOpened()
    assert overlay.get(cv2.CAP_PROP_FPS) == pytest.approx(5)
    assert int(overlay.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
  finally:
    overlay.release()


def test_without_overlay_video_only_the_label_pngs_are_written(quick_config, tmp_path,
                                                               monkeypatch, capsys):
  """`eval.overlay_video=False` (a large input, whose labels are all that is wanted) writes no
  overlay video, and removes an earlier run's, which would not show these labels."""
  _restore_a_stub(monkeypatch, _AnswersPairsBackwards)
  frames = _black_frames(tmp_path / "frames", 2)
  [out_dir] = infer.run(quick_config, str(tmp_path), str(frames))
  assert (out_dir / "overlay.mp4").exists()
  monkeypatch.setattr(infer.visualize, "overlay", None)  # not called
  quick_config.eval.overlay_video = False
  quick_config.eval.overlay_fps = 0  # not checked: no video plays at it
  infer.run(quick_config, str(tmp_path), str(frames))
  assert sorted(p.name for p in out_dir.iterdir()) == ["labels", "run.json"]
  assert len(list((out_dir / "labels").iterdir())) == 2
  assert "(no overlay video: eval.overlay_video is off)" in capsys.readouterr().out


class _LabelsTheDevice:
  """Labels every pixel with the index of the device its variables are on."""

  def __init__(self, variables):
    self._label = jax.local_devices().index(next(iter(variables["w"].devices())))
    self._index = 0

  def push(self, frame):
    index, self._index = self._index, self._index + 1
    return [(index, np.full(frame.shape[:2], self._label, np.int32))]

  def flush(self):
    return []


def _restore_the_device_labeller(monkeypatch):
  """`loop.restore_for_eval` gives a method of `_LabelsTheDevice` predictors and variables for
  `parallel.local_copies` to put on each device."""

  class Method:
    predictor = staticmethod(_LabelsTheDevice)

  monkeypatch.setattr(loop, "restore_for_eval",
                      lambda *args: (Method(), {"w": np.zeros(1, np.float32)}, 7))


def test_a_folder_of_videos_is_shared_out_over_the_prediction_devices(quick_config, tmp_path,
                                                                      monkeypatch, capsys):
  """`eval.devices=2`: device k predicts videos k, k + 2, ... (each with its own copy of the
  variables, in a thread of its own); the folders come back in the videos' order, without the
  per-frame progress lines that two videos at once would interleave."""
  _restore_the_device_labeller(monkeypatch)
  for name in ("a", "b", "c"):
    _black_frames(tmp_path / "in" / name, 2)
  quick_config.eval.update(devices=2, overlay_video=False)
  (tmp_path / "run").mkdir()
  out_dirs = infer.run(quick_config, str(tmp_path / "run"), str(tmp_path / "in"))
  assert [d.name for d in out_dirs] == ["a", "b", "c"]
  for out_dir, device in zip(out_dirs, (0, 1, 0)):
    labels = sorted((out_dir / "labels").iterdir())
    assert len(labels) == 2 and all(np.all(np.asarray(Image.open(p)) == device) for p in labels)
  assert "infer frame" not in capsys.readouterr().out


def test_one_video_keeps_its_frame_progress_whatever_the_devices(quick_config, tmp_path,
                                                                 monkeypatch, capsys):
  """One video runs on one device alone, so its progress lines cannot interleave with another's."""
  _restore_the_device_labeller(monkeypatch)
  quick_config.eval.update(devices=2, overlay_video=False)
  (tmp_path / "run").mkdir()
  [out_dir] = infer.run(quick_config, str(tmp_path / "run"), str(_black_frames(tmp_path / "a", 2)))
  assert len(list((out_dir / "labels").iterdir())) == 2
  assert "infer frame 2/2" in capsys.readouterr().out


def test_on_an_accelerator_a_folders_later_frame_sizes_compile_ahead_to_the_same_labels(
    quick_config, trained_workdir, tmp_path, monkeypatch):
  """As the evaluator does (tests/eval/test_evaluator.py): a device's later videos' frame sizes
  are traced on the compile-ahead thread, none where the videos are predicted after the first,
  and the label PNGs are those of compiling as each size comes (`eval.compile_ahead` off)."""
  for name, hw in (("a", (40, 56)), ("b", (40, 56)), ("c", (56, 40)), ("d", (48, 48))):
    _rng_frames(tmp_path / "in" / name, [hw] * 2)
  # Network inputs of 64x80, 80x64 and 80x80, which no other test compiles; one device.
  quick_config.data.eval_transform.update(scale=(80, 80), size_divisor=16)
  quick_config.eval.update(devices=1, overlay_video=False)
  monkeypatch.setattr(parallel, "computes_off_the_host", lambda: True)
  log = []  # (thread, traced function) and ("predict", video), in order
  infer_video = infer._infer_video

  def logged_infer_video(config, method, variables, step, workdir, input_path, *args, **kwargs):
    log.append(("predict", os.path.basename(input_path)))
    return infer_video(config, method, variables, step, workdir, input_path, *args, **kwargs)

  monkeypatch.setattr(infer, "_infer_video", logged_infer_video)
  slow_down(monkeypatch, infer, "_predict_black_frames", 0.5)
  outputs = {}
  with traced_functions(log):
    for ahead in (True, False):
      quick_config.eval.compile_ahead = ahead
      workdir = _copy_of(trained_workdir, tmp_path / f"run_{ahead}")
      log.clear()
      infer.run(quick_config, str(workdir), str(tmp_path / "in"))
      outputs[ahead] = _outputs(workdir / "infer")
      if ahead:
        assert_later_sizes_traced_ahead(log, "b", later_sizes=2)
      else:
        assert "eval_compile_ahead" not in [thread for thread, _ in log]
  for ahead, files in outputs.items():  # each run.json names eval.compile_ahead where it was off
    for name in [name for name in files if name.endswith("run.json")]:
      files[name] = json.loads(files[name])
      changes = files[name].pop("config_changes")
      assert ("eval.compile_ahead: true -> false" in changes) is not ahead
  assert outputs[True] == outputs[False] and len(outputs[True]) == 4 * 3  # labels, overlay, run
