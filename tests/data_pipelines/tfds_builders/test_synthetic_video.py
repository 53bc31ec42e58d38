"""data_pipelines.tfds_builders.synthetic_video: the synthetic set's builder, keyed on its knobs:
reuse, the predefined set, racing processes, versions."""
import logging
import os

import pytest
import tensorflow_datasets as tfds
from absl import logging as absl_logging
from etils import epath

from data_pipelines.sources import synthetic
from data_pipelines.tfds_builders import synthetic_video, video_records
from tests.conftest import REPO, load_config
from tests.data_pipelines import helpers
from vssjax import configs_lib


def test_prepare_reuses_existing_data_and_keys_on_knobs(tmp_path):
  first = synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)
  marker = os.path.join(first.data_path, "dataset_info.json")
  stamp = os.path.getmtime(marker)
  again = synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)
  assert again.data_path == first.data_path and os.path.getmtime(marker) == stamp
  other = synthetic_video.synthetic_config(**{**helpers.TINY, "seed": 3})
  assert other.name == "v8-2_f6_32x32_s3" and other.name not in str(first.data_path)


def test_the_predefined_synthetic_set_is_the_one_the_configs_build():
  """The set's defaults were written three times and disagreed (16 frames in the source and in
  the TFDS config, 24 in the configs): TFDS's predefined config was a set no config built, and a
  source made without knobs was not the configs' set."""
  knobs = configs_lib.base_config().data.synthetic.to_dict()
  for path in sorted((REPO / "configs").glob("*/synthetic_*.py")):
    assert load_config(str(path.relative_to(REPO))).data.synthetic.to_dict() == knobs, path
  assert synthetic.SyntheticVideoSource().knobs == knobs
  predefined, = synthetic_video.VssjaxSyntheticVideo.BUILDER_CONFIGS
  assert {k: getattr(predefined, k) for k in knobs} == knobs
  assert predefined.name == synthetic_video.synthetic_config(**knobs).name == (
      "v200-16_f24_128x128_s0")


@pytest.mark.parametrize("moved_in_after_the_check", [False, True])
def test_a_build_another_process_finished_first_is_read(tmp_path, monkeypatch,
                                                        moved_in_after_the_check):
  """The processes of a multi-process run on a fresh data dir all build the set; the one whose
  build finishes second finds the folder taken and reads the first's: TFDS's FileExistsError
  (epath's rename checks that the destination is free), or, where the first's build moved in
  after that check, os.rename's ENOTEMPTY, a plain OSError."""
  build = synthetic_video.VssjaxSyntheticVideo._download_and_prepare
  raced = []

  def build_while_another_process_finishes(self, *args, **kwargs):
    if not raced:
      raced.append(True)
      synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)  # the other process
    return build(self, *args, **kwargs)

  monkeypatch.setattr(synthetic_video.VssjaxSyntheticVideo, "_download_and_prepare",
                      build_while_another_process_finishes)
  if moved_in_after_the_check:
    monkeypatch.setattr(type(epath.Path(tmp_path)._backend), "rename",
                        lambda self, path, dst: os.rename(path, dst))
  builder = synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)
  assert raced
  index = video_records.read_index(video_records.index_path(builder, "val"))
  assert [summary.name for summary in index] == [video.name for video in
                                                synthetic.SyntheticVideoSource(
                                                    **helpers.TINY).videos("val")]
  assert sorted(os.listdir(os.path.dirname(builder.data_path))) == ["2.1.0"]  # no temporary left


def test_custom_knobs_make_no_custom_configuration_warning(tmp_path, caplog):
  """Every knob set but the default is a TFDS custom config by design: TFDS's warning about it at
  each run (and in each Grain worker) is dropped, and only that one."""
  caplog.set_level(logging.WARNING, logger="absl")
  synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)
  assert "Using custom data configuration" not in caplog.text
  absl_logging.warning("Using custom data configuration: %s", "another builder's")
  assert "Using custom data configuration: another builder's" in caplog.text


def test_a_bumped_version_is_built_beside_the_old_one(tmp_path, monkeypatch):
  """Records of another layout are never read: a new VERSION builds a new directory."""
  old = synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)
  assert str(synthetic_video.VssjaxSyntheticVideo.VERSION) == "2.1.0"  # Video positions.
  monkeypatch.setattr(synthetic_video.VssjaxSyntheticVideo, "VERSION",
                      tfds.core.Version("2.1.1"))
  stamp = os.path.getmtime(os.path.join(old.data_path, "dataset_info.json"))
  new = synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)
  assert os.fspath(new.data_path).endswith("2.1.1") and new.data_path != old.data_path
  assert os.path.exists(os.path.join(new.data_path, "dataset_info.json"))
  assert video_records.index_path(new, "train").exists()
  assert os.path.getmtime(os.path.join(old.data_path, "dataset_info.json")) == stamp
