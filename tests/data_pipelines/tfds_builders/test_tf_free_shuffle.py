"""Tests for TFDS's shuffler spilling to disk without TensorFlow."""
import errno

from tensorflow_datasets.core import shuffle

from data_pipelines.tfds_builders import synthetic_video, tf_free_shuffle
from tests.data_pipelines import helpers


def test_a_split_over_the_memory_buffer_spills_to_disk_without_tensorflow(tmp_path, monkeypatch):
  """TFDS spills a split past its 1 GB buffer to bucket files through tf.io.gfile (VSPW's train
  split failed there, TensorFlow not being installed); with a 1 kB buffer the tiny set spills
  too, and must give the records, in the order, of the in-memory build."""
  in_memory = synthetic_video.prepare_synthetic(str(tmp_path / "memory"), **helpers.TINY)
  spilled = []
  add_to_bucket = shuffle.Shuffler._add_to_bucket
  monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 1000)
  monkeypatch.setattr(shuffle.Shuffler, "_add_to_bucket",
                      lambda self, *args: spilled.append(1) or add_to_bucket(self, *args))
  on_disk = synthetic_video.prepare_synthetic(str(tmp_path / "disk"), **helpers.TINY)
  assert len(spilled) == 60  # every frame of both splits went through a bucket file
  for split in ("train", "val"):
    expected, records = in_memory.as_data_source(split=split), on_disk.as_data_source(split=split)
    assert len(records) == len(expected)
    for record, reference in zip(records, expected):
      assert (record["video"], record["t"]) == (reference["video"], reference["t"])
      assert record["image"] == reference["image"]


def test_too_many_open_files_raises_the_limit_and_retries(tmp_path, monkeypatch):
  """The shuffler keeps up to 1000 bucket files open; on EMFILE the soft limit is raised as TFDS
  does under TensorFlow, then the open is tried once more."""
  raised, opened = [], []
  path_class = type(tf_free_shuffle.epath.Path(tmp_path))  # epath's local path class
  real_open = path_class.open

  def open_once_failing(path, mode):
    if not opened:
      opened.append(path)
      raise OSError(errno.EMFILE, "Too many open files")
    return real_open(path, mode)

  monkeypatch.setattr(path_class, "open", open_once_failing)
  monkeypatch.setattr(shuffle, "_increase_open_files_limit", lambda: raised.append(True))
  with tf_free_shuffle.shuffler_without_tensorflow():
    with shuffle.tf.io.gfile.GFile(tmp_path / "bucket", "wb") as f:
      f.write(b"x")
  assert len(opened) == 1 and raised == [True]
  assert (tmp_path / "bucket").read_bytes() == b"x"
