"""data_pipelines.tfds_builders.real_videos: ArrayRecord copies of the real datasets, built from
tiny copies in their on-disk layouts: round trip, rebuilds, older layouts, killed builds."""
import os

import numpy as np
import pytest
from etils import epath

from data_pipelines import dataset
from data_pipelines.sources import cityscapes
from data_pipelines.tfds_builders import real_videos, video_records
from tests.data_pipelines import helpers
from vssjax.errors import DataError, SetupError


def test_real_source_arrayrecord_round_trip(tmp_path):
  root = helpers.write_cityscapes(tmp_path / "cs")
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


def test_a_failed_build_leaves_no_empty_folder(tmp_path):
  """A frame that cannot be decoded stops the build, naming it; the dataset's and the downloads'
  folders TFDS had made stayed behind, empty, and --data_dir with them. Those there before stay."""
  root = helpers.write_vspw(tmp_path / "vspw")
  bad = os.path.join(root, "data", "vid_a", "origin", "00000001.jpg")
  with open(bad, "wb") as frame:
    frame.write(b"not a jpeg")
  with pytest.raises(DataError, match=f"{bad}: cannot decode image"):
    real_videos.prepare("vspw", root, str(tmp_path / "tfds"))
  assert not (tmp_path / "tfds").exists()
  (tmp_path / "tfds" / "downloads").mkdir(parents=True)
  with pytest.raises(DataError):
    real_videos.prepare("vspw", root, str(tmp_path / "tfds"))
  assert os.listdir(tmp_path / "tfds") == ["downloads"]


def test_building_again_keeps_the_records_and_writes_only_a_missing_index(tmp_path, capsys):
  root = helpers.write_vspw(tmp_path / "vspw")
  builder = real_videos.prepare("vspw", root, str(tmp_path / "tfds"))
  index = builder.data_path / "video_index-train.json"
  os.remove(os.fspath(index))  # as an interrupted build leaves it
  capsys.readouterr()
  real_videos.prepare("vspw", root, str(tmp_path / "tfds"))
  assert "the records are already in" in capsys.readouterr().out and index.exists()


def test_a_split_the_copy_lacks_is_said_skipped(tmp_path, capsys):
  """A copy without val.txt built without a word; its first training stopped at the missing
  split."""
  root = helpers.write_vspw(tmp_path / "vspw")
  os.remove(os.path.join(root, "val.txt"))
  builder = real_videos.prepare("vspw", root, str(tmp_path / "tfds"))
  assert set(builder.info.splits) == {"train", "test"}
  assert (f"build: no split 'val' in this copy (vspw {root}/val.txt is missing): skipped\n"
          in capsys.readouterr().out)


def test_building_again_from_a_copy_that_changed_says_which_videos_differ(tmp_path, capsys):
  """A copy completed after its build (a video added to val.txt) was read as built, without a
  word: every later evaluation scored the old subset."""
  root = helpers.write_vspw(tmp_path / "vspw")
  real_videos.prepare("vspw", root, str(tmp_path / "tfds"))
  other = helpers.write_vspw(tmp_path / "more")
  os.rename(os.path.join(other, "data", "vid_c"), os.path.join(root, "data", "vid_e"))
  with open(os.path.join(root, "val.txt"), "a") as listed:
    listed.write("vid_e\n")
  with open(os.path.join(root, "train.txt"), "w") as listed:
    listed.write("vid_a\n")
  os.remove(os.path.join(root, "test.txt"))  # a split the copy lost
  capsys.readouterr()
  builder = real_videos.prepare("vspw", root, str(tmp_path / "tfds"))
  said = capsys.readouterr().out
  assert (f"build: split 'test' is only in the records (vspw {root}/test.txt). Runs read the "
          f"records: delete {builder.data_path} and build again") in said
  lines = [line for line in said.splitlines() if "differ" in line]
  rebuild = f"Runs read the records: delete {builder.data_path} and build again"
  assert lines == [
      f"build: the kept records of split 'train' differ from the copy in vspw {root}/train.txt "
      "(videos: 2 in the records, 1 in the copy); only in the copy: none; only in the records: "
      f"vid_b; with other frames in the copy: none. {rebuild} to make them from this copy",
      f"build: the kept records of split 'val' differ from the copy in vspw {root}/val.txt "
      "(videos: 1 in the records, 2 in the copy); only in the copy: vid_e; only in the records: "
      f"none; with other frames in the copy: none. {rebuild} to make them from this copy"]


def test_building_again_from_a_copy_whose_videos_grew_says_which(tmp_path, capsys):
  """Cityscapes' sequences added after a build of its annotated frames alone (or a VSPW video
  whose download completed) were read as built: one-frame videos, without a word."""
  root = helpers.write_cityscapes_without_sequences(tmp_path / "cs")
  real_videos.prepare("cityscapes", root, str(tmp_path / "tfds"))
  complete = helpers.write_cityscapes(tmp_path / "complete")
  os.rename(os.path.join(complete, "leftImg8bit_sequence"),
            os.path.join(root, "leftImg8bit_sequence"))
  capsys.readouterr()
  builder = real_videos.prepare("cityscapes", root, str(tmp_path / "tfds"))
  lines = [line for line in capsys.readouterr().out.splitlines() if "differ" in line]
  assert len(lines) == 1 and lines[0].startswith(
      "build: the kept records of split 'train' differ from the copy in cityscapes")
  assert ("only in the copy: none; only in the records: none; with other frames in the copy: "
          "frankfurt_000000_000019 (1 -> 30 frames), frankfurt_000001_000029 (1 -> 30 frames). "
          f"Runs read the records: delete {builder.data_path} and build again") in lines[0]


def test_records_of_an_older_layout_must_be_rebuilt(tmp_path):
  """TFDS reads only the builder's current version: records built at 2.0.0 (no video positions)
  are reported as such, with the command that rebuilds them."""
  root = helpers.write_cityscapes(tmp_path / "cs")
  data_dir = str(tmp_path / "tfds")
  builder = real_videos.prepare("cityscapes", root, data_dir)
  os.rename(builder.data_path, os.path.join(os.path.dirname(builder.data_path), "2.0.0"))
  with pytest.raises(SetupError, match=r"version 2\.1\.0 .* Found only version 2\.0\.0 "
                     r"there, whose record layout .*python -m data_pipelines\.build "
                     r"--source=cityscapes"):
    real_videos.load("cityscapes", data_dir)


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
  root, data_dir = helpers.write_vspw(tmp_path / "vspw"), str(tmp_path / "tfds")
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
