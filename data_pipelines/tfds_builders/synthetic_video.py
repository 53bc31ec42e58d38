"""TFDS builder for the procedural synthetic video set, keyed on all its knobs."""
from __future__ import annotations

import dataclasses
import errno
import inspect
import logging
import os

import tensorflow_datasets as tfds
from absl import logging as absl_logging

from data_pipelines.sources import synthetic
from data_pipelines.tfds_builders import video_records


@dataclasses.dataclass(eq=False)
class SyntheticVideoConfig(tfds.core.BuilderConfig):
  """The source's knobs, defaulting as the source (`synthetic.DEFAULT_KNOBS`, which the configs
  read too), so that the predefined config below is the set the synthetic configs build."""
  num_train_videos: int = synthetic.DEFAULT_KNOBS["num_train_videos"]
  num_val_videos: int = synthetic.DEFAULT_KNOBS["num_val_videos"]
  num_frames: int = synthetic.DEFAULT_KNOBS["num_frames"]
  height: int = synthetic.DEFAULT_KNOBS["height"]
  width: int = synthetic.DEFAULT_KNOBS["width"]
  seed: int = synthetic.DEFAULT_KNOBS["seed"]


def synthetic_config(**knobs) -> SyntheticVideoConfig:
  """A config named after its knobs, so each knob set gets its own directory."""
  config = SyntheticVideoConfig(name="", **knobs)
  name = "v{0.num_train_videos}-{0.num_val_videos}_f{0.num_frames}_{0.height}x{0.width}_s{0.seed}"
  return dataclasses.replace(config, name=name.format(config))


class VssjaxSyntheticVideo(video_records.VideoSegBuilder):
  """The synthetic set as ArrayRecord. Bump VERSION whenever the generator's output or the record
  layout changes: the new version is built beside the old one."""
  VERSION = tfds.core.Version("2.1.0")
  RELEASE_NOTES = {
      "1.0.0": "First synthetic video generator.",
      "2.0.0": "Layout changed: one record per frame (was per video).",
      "2.1.0": "Each record holds its video's position in the source's list.",
  }
  BUILDER_CONFIGS = [synthetic_config()]

  def make_source(self, dl_manager=None) -> synthetic.SyntheticVideoSource:
    del dl_manager  # Generated, nothing to read.
    knobs = inspect.signature(synthetic.SyntheticVideoSource).parameters
    return synthetic.SyntheticVideoSource(**{k: getattr(self.builder_config, k) for k in knobs})


def _not_a_custom_config_warning(record: logging.LogRecord) -> bool:
  """False for TFDS's 'Using custom data configuration' warning about a `SyntheticVideoConfig`:
  every knob set but the default one is a custom config by design (`synthetic_config`), so TFDS
  warned at every run and evaluation about nothing to fix. Every other record passes."""
  return not (record.msg == "Using custom data configuration: %s" and record.args
              and isinstance(record.args[0], SyntheticVideoConfig))


# For the life of the process, from the import of the builder's class on: Grain's worker processes
# make the builder again when they unpickle the data source, and import this module to do so.
absl_logging.get_absl_logger().addFilter(_not_a_custom_config_warning)


def prepare_synthetic(data_dir: str, **knobs) -> VssjaxSyntheticVideo:
  """Builds the synthetic set under `data_dir` unless already there; returns its builder.

  The processes of a multi-process run on a fresh data dir each build it (in a temporary folder of
  their own): the first to finish moves its build into place, and TFDS's move fails for the
  others, which then read that build, the same records (the generator is deterministic). The move
  fails with FileExistsError (epath's check that the destination is free), or with ENOTEMPTY where
  the other build moved in after that check, as `os.rename` finds it.
  """
  config = synthetic_config(**knobs)
  # TFDS refuses a config object named like a predefined one; pass those by name.
  predefined = config.name in {c.name for c in VssjaxSyntheticVideo.BUILDER_CONFIGS}

  def builder_of_config():
    return VssjaxSyntheticVideo(config=config.name if predefined else config,
                                data_dir=os.path.expanduser(data_dir), file_format="array_record")

  builder = builder_of_config()
  try:
    builder.download_and_prepare()
  except OSError as error:
    taken = isinstance(error, FileExistsError) or error.errno == errno.ENOTEMPTY
    if not (taken and os.path.exists(os.fspath(builder.data_path))):
      raise
    builder = builder_of_config()  # another process's finished build, found as such
    builder.download_and_prepare()  # writes nothing but a video index still missing
  return builder
