"""Tests for data_pipelines.sources.base: readers, label checks, DataError messages, registry,
folder listings, splits of no video."""
import io
import os

import cv2
import grain
import numpy as np
import pytest
from PIL import Image

from data_pipelines import clip_sampling, dataset, loader
from data_pipelines.sources import base, camvid, cityscapes, get_source, synthetic, vspw
from tests.data_pipelines import helpers
from vssjax.errors import SetupError


def _png(array) -> bytes:
  return cv2.imencode(".png", array)[1].tobytes()


def test_read_image_from_path_bytes_and_array_is_rgb(tmp_path):
  rgb = np.zeros((4, 5, 3), np.uint8)
  rgb[..., 0] = 200  # Red.
  path = str(tmp_path / "f.png")
  cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
  for payload in (path, _png(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)), rgb):
    np.testing.assert_array_equal(base.read_image(payload, "x"), rgb)


def test_missing_file_names_the_file(tmp_path):
  path = str(tmp_path / "missing.jpg")
  with pytest.raises(base.DataError, match="missing.jpg: cannot read file") as error:
    base.read_image(path, path)
  assert error.value.where == path


def test_a_folder_that_cannot_be_listed_names_the_folder(tmp_path, monkeypatch):
  """A folder without read permission (simulated: root lists any) was a PermissionError
  traceback from wherever it was listed (a dataset's discovery, `--mode=infer`'s input)."""
  listdir = os.listdir

  def denied(folder):
    if str(folder) == str(tmp_path / "locked"):
      raise PermissionError(13, "Permission denied", str(folder))
    return listdir(folder)

  monkeypatch.setattr(os, "listdir", denied)
  with pytest.raises(base.DataError, match=r"locked: cannot read folder \(Permission denied\)$"):
    base.visible_entries(str(tmp_path / "locked"))


def test_corrupt_and_empty_images_name_the_file(tmp_path):
  path = tmp_path / "bad.jpg"
  path.write_bytes(b"\xff\xd8 not really a jpeg")
  with pytest.raises(base.DataError, match="bad.jpg: cannot decode image"):
    base.read_image(str(path), str(path))
  path.write_bytes(b"")
  with pytest.raises(base.DataError, match="bad.jpg: empty file"):
    base.read_image(str(path), str(path))


def test_label_of_wrong_size_names_the_file():
  with pytest.raises(base.DataError, match=r"lab.png: label size 3x4 differs from image size 4x4"):
    base.check_label(np.zeros((3, 4), np.uint8), (4, 4), 9, "lab.png")


def test_class_id_out_of_range_names_the_file_and_ids():
  label = np.array([[0, 8, 255, 9], [12, 9, 1, 2]], np.uint8)
  with pytest.raises(base.DataError, match=r"lab.png: class ids \[9, 12\] out of range \[0, 9\)"):
    base.check_label(label, (2, 4), 9, "lab.png")


def test_check_label_accepts_valid_ids_and_ignore():
  label = np.array([[0, 8, 255]], np.uint8)
  out = base.check_label(label, (1, 3), 9, "x")
  assert out.dtype == np.int32
  np.testing.assert_array_equal(out, [[0, 8, 255]])


def test_colour_label_is_rejected_naming_palette_and_colour_images():
  """A palette PNG reads as colour through OpenCV: the message says both, and what to use."""
  with pytest.raises(base.DataError, match=r"lab.png: a colour label image \(3 channels: "
                     r"colour-coded classes, or a palette PNG.* single-channel class ids"):
    base.read_label(_png(np.zeros((2, 2, 3), np.uint8)), "lab.png")
  palette = Image.fromarray(np.zeros((2, 2), np.uint8), mode="P")
  palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
  buffer = io.BytesIO()
  palette.save(buffer, format="PNG")
  with pytest.raises(base.DataError, match="or a palette PNG, which reads as colour"):
    base.read_label(buffer.getvalue(), "palette.png")
  with pytest.raises(base.DataError, match="expected a single-channel integer label, got float32"):
    base.read_label(np.zeros((2, 2), np.float32), "float.png")


def test_decode_label_applies_the_mapping_before_checking():
  class ReduceZero(synthetic.SyntheticVideoSource):  # VSPW-style: 0 -> 255, v -> v - 1.
    def map_label(self, raw):
      return np.where(raw == 0, 255, raw.astype(np.int32) - 1)

  frame = base.FrameRef("v/0", np.zeros((1, 3, 3), np.uint8), np.array([[0, 1, 9]], np.uint8))
  np.testing.assert_array_equal(ReduceZero().decode_label(frame, (1, 3)), [[255, 0, 8]])
  with pytest.raises(base.DataError, match=r"v/0 \(label\): class ids \[9\]"):
    synthetic.SyntheticVideoSource().decode_label(
        base.FrameRef("v/0", np.zeros((1, 3, 3), np.uint8), np.array([[0, 1, 9]], np.uint8)),
        (1, 3))


def test_registry():
  assert isinstance(get_source("synthetic", num_train_videos=2), synthetic.SyntheticVideoSource)
  with pytest.raises(ValueError, match="unknown source 'nope'"):
    get_source("nope")


def test_default_palette_is_distinct_and_voc_like():
  palette = base.default_palette(21)
  assert palette.shape == (21, 3) and palette.dtype == np.uint8
  assert len({tuple(c) for c in palette}) == 21
  np.testing.assert_array_equal(palette[:3], [[0, 0, 0], [128, 0, 0], [0, 128, 0]])


# base.visible_entries, through which the VSPW, Cityscapes and CamVid readers list folders.
def test_copies_made_on_macos_read_as_the_originals(tmp_path):
  """A copy that went through macOS holds `.DS_Store` and an AppleDouble `._<name>` beside every
  file; those match the datasets' file patterns but are no images, and a licence file may sit
  beside Cityscapes' cities. None of them is a frame, a label or a city."""
  def litter(folder):
    for name in os.listdir(folder):
      (folder / f"._{name}").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")

  vspw_root = tmp_path / "VSPW_480p"
  helpers.write_vspw(vspw_root)
  litter(vspw_root / "data" / "vid_a" / "origin")
  litter(vspw_root / "data" / "vid_a" / "mask")
  cs_root = tmp_path / "cs"
  helpers.write_cityscapes(cs_root)
  litter(cs_root / "gtFine" / "train" / "frankfurt")
  litter(cs_root / "leftImg8bit_sequence" / "train" / "frankfurt")
  litter(cs_root / "gtFine" / "train")
  (cs_root / "gtFine" / "train" / "README").write_text("licence")
  cv_root = tmp_path / "cv"
  helpers.write_camvid(cv_root, with_frames=True)
  for folder in ("train", "trainannot", "frames"):
    litter(cv_root / folder)
  for source, frames in ((vspw.VspwSource(str(vspw_root)), [3, 3]),
                         (cityscapes.CityscapesSource(str(cs_root)), [30, 30]),
                         (camvid.CamvidSource(str(cv_root)), [30, 1, 1])):
    videos = dataset.VideoDataset.from_source(source, "train")
    assert [videos.num_frames(i) for i in range(len(videos))] == frames
    for i in range(len(videos)):
      videos.load(i, videos.labeled_indices(i))


# base.check_videos_have_frames, met through the loader on a CamVid copy.
def test_a_split_of_no_videos_is_refused_naming_its_folder(tmp_path):
  """CamVid images saved as .jpg match no `<sequence>_<number>.png`: the split holds no video.
  Training on it stopped with a bare ZeroDivisionError, and evaluating it scored nothing."""
  root = helpers.write_camvid(tmp_path / "cv", with_frames=False)
  for name in os.listdir(os.path.join(root, "train")):
    path = os.path.join(root, "train", name)
    os.rename(path, path[:-4] + ".jpg")
  cfg = helpers.data_config(tmp_path / "tfds", source="camvid", backend="files",
                            train_split="train", eval_split="train")
  cfg.camvid = dict(root=root)
  message = (rf"camvid {root}/train: holds no videos \(looked for train/<sequence><number>\.png "
             r"images, their labels of the same names in trainannot/; docs/data\.md\)")
  with pytest.raises(base.DataError, match=message):
    loader.make_train_loader(cfg, clip_sampling.SingleFrameSampler(), seed=0,
                             shard_options=grain.sharding.ShardOptions(0, 1))
  with pytest.raises(base.DataError, match=message):
    list(loader.eval_videos(cfg, "train"))


@pytest.mark.parametrize("name", ["vspw", "cityscapes", "camvid", "vtest_pseudo"])
def test_a_dataset_root_left_unset_is_named_before_any_path_is_read(name, tmp_path, monkeypatch):
  """With `data.backend='files'` and no root, the split was read from the current folder: an
  error naming `val.txt` or `gtFine/val` and no setting, or, where one happened to be there, its
  videos."""
  monkeypatch.chdir(tmp_path)
  (tmp_path / "val.txt").write_text("a video\n")
  num_classes = get_source(name, root="").num_classes
  data = helpers.data_config(tmp_path, source=name, backend="files", num_classes=num_classes,
                             **{name: dict(root="")})
  with pytest.raises(SetupError, match=rf"^data.{name}.root is not set: pass "
                     rf"--config.data.{name}.root=<the dataset's folder>"):
    dataset.make_dataset(data, "val")


def test_records_need_no_dataset_root(tmp_path):
  """... which the records (the default backend) are read without: a pod reading gs:// records
  has no copy of the dataset."""
  from data_pipelines.tfds_builders import real_videos  # pylint: disable=g-import-not-at-top
  real_videos.prepare("cityscapes", helpers.write_cityscapes(tmp_path / "cs"),
                      str(tmp_path / "tfds"))
  data = helpers.data_config(tmp_path / "tfds", source="cityscapes", backend="arrayrecord",
                             cityscapes=dict(root=""))
  assert len(dataset.make_dataset(data, "train"))
