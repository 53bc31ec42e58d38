"""TFDS ArrayRecord builders for the real datasets, read from the user's copy (`manual_dir`).

TFDS cannot download VSPW, Cityscapes or CamVid (registration or licences), so each builder reads
the user's extracted copy, passed as `manual_dir`, through the matching source. One builder per
source, each named `vssjax_<source>`; `python -m data_pipelines.build` is the command line for them.
"""
from __future__ import annotations

import contextlib
import os

import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import constants

from data_pipelines.sources import base, get_source
from data_pipelines.tfds_builders import video_records
from vssjax.errors import SetupError
from vssjax.files import check_folder_path
from vssjax.listing import first_few


class _ManualSourceBuilder(video_records.VideoSegBuilder, skip_registration=True):
  """Builds `get_source(SOURCE, root=manual_dir)`."""
  SOURCE = ""
  VERSION = tfds.core.Version("2.1.0")
  RELEASE_NOTES = {
      "1.0.0": "First release: encoded source images, mapped train-id PNG labels.",
      "2.0.0": "Layout changed: one record per frame (was per video), so that a clip reads "
               "only its frames. Records of 1.0.0 must be rebuilt.",
      "2.1.0": "Each record holds its video's position in the split's list file, so that videos "
               "keep the source's order (DCFM's keyframe phase depends on it). Records of 2.0.0 "
               "must be rebuilt.",
  }

  def make_source(self, dl_manager: tfds.download.DownloadManager) -> base.VideoSource:
    return get_source(self.SOURCE, root=os.fspath(dl_manager.manual_dir))


class VssjaxVspw(_ManualSourceBuilder):
  SOURCE = "vspw"
  MANUAL_DOWNLOAD_INSTRUCTIONS = "manual_dir = the extracted VSPW_480p folder (holds train.txt)."


class VssjaxCityscapes(_ManualSourceBuilder):
  SOURCE = "cityscapes"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "manual_dir = a folder holding gtFine/ and leftImg8bit_sequence/ (or, for per-frame methods "
      "only, leftImg8bit/) from cityscapes-dataset.com.")


class VssjaxCamvid(_ManualSourceBuilder):
  SOURCE = "camvid"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "manual_dir = the SegNet-layout CamVid folder (train/, trainannot/, ...; optional frames/).")


class VssjaxVtestPseudo(_ManualSourceBuilder):
  SOURCE = "vtest_pseudo"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "manual_dir = the out_dir of `python -m data_pipelines.make_vtest_pseudo`.")


BUILDERS: dict[str, type[_ManualSourceBuilder]] = {
    cls.SOURCE: cls for cls in (VssjaxVspw, VssjaxCityscapes, VssjaxCamvid, VssjaxVtestPseudo)}


def _builder(source_name: str, data_dir: str, manual_dir: str = ""
             ) -> tuple[_ManualSourceBuilder, tfds.download.DownloadConfig]:
  if source_name not in BUILDERS:
    raise SetupError(f"no ArrayRecord builder for source {source_name!r}; have {sorted(BUILDERS)}; "
                     "read the others (sources of one's own too) with data.backend='files'")
  config = tfds.download.DownloadConfig(manual_dir=os.path.expanduser(manual_dir) or None)
  data_dir = os.path.expanduser(data_dir)
  check_folder_path(data_dir, "--data_dir")
  builder = BUILDERS[source_name](data_dir=data_dir,
                                  file_format="array_record")
  return builder, config


def _is_built(builder: _ManualSourceBuilder) -> bool:
  """Whether the builder's current version has been written (TFDS writes its info last)."""
  return os.path.exists(os.path.join(os.fspath(builder.data_path), "dataset_info.json"))


def prepare(source_name: str, manual_dir: str, data_dir: str) -> _ManualSourceBuilder:
  """Builds the source's records from manual_dir into data_dir unless already there. A build that
  fails (bad data, named in the error) leaves no folder it created empty under data_dir."""
  root = os.path.expanduser(data_dir)
  made_by_tfds = [os.path.join(root, BUILDERS[source_name].name)] if source_name in BUILDERS else []
  made_by_tfds += [os.path.join(root, "downloads", "extracted"), os.path.join(root, "downloads")]
  with _removed_if_left_empty(made_by_tfds + [root]):
    return _prepare(source_name, manual_dir, data_dir)


@contextlib.contextmanager
def _removed_if_left_empty(folders: list[str]):
  """On an error, removes those of `folders` (deepest first) that did not exist before and are
  empty: TFDS makes the dataset's and its downloads' folders before reading the copy."""
  new = [folder for folder in folders if not os.path.exists(folder)]
  try:
    yield
  except BaseException:
    for folder in new:
      with contextlib.suppress(OSError):  # not empty, or never made
        os.rmdir(folder)
    raise


def _prepare(source_name: str, manual_dir: str, data_dir: str) -> _ManualSourceBuilder:
  builder, config = _builder(source_name, data_dir, manual_dir)
  folder = os.path.expanduser(manual_dir)
  if not os.path.isdir(folder) or not os.listdir(folder):
    raise SetupError(f"--manual_dir {manual_dir} is not a folder holding the dataset's copy: "
                     f"{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}")
  interrupted = _interrupted_builds(builder)
  if interrupted:
    sizes = ", ".join(f"{folder.name} ({_size(folder)})" for folder in interrupted)
    print(f"build: left by a killed build in {interrupted[0].parent}: {sizes}. TFDS neither "
          f"resumes nor removes such a folder (a build starts over beside it): delete it to free "
          f"its space (unless another build of {source_name} is running now)", flush=True)
  built = _is_built(builder)
  if built:
    print(f"build: the records are already in {builder.data_path}: kept, only a missing video "
          f"index is written (delete that folder to rebuild)", flush=True)
  builder.download_and_prepare(download_config=config)
  source = get_source(source_name, root=folder)
  if built:
    _say_where_the_copy_differs(builder, source)
  else:
    for split in source.splits:
      if split not in builder.info.splits:  # a copy without a test set, or a list file lost
        print(f"build: no split {split!r} in this copy ({source.describe_split(split)} is "
              "missing): skipped", flush=True)
  return builder


def _say_where_the_copy_differs(builder: _ManualSourceBuilder, source: base.VideoSource) -> None:
  """Prints the splits, and split by split the videos, that the kept records and the copy do not
  share, and the shared videos whose frames or labelled frames the copy has more or fewer of: a
  copy completed (or pruned) since its build is otherwise read as it was then, every later run
  on a subset of its videos, or of their frames (Cityscapes' sequences added), without a word."""
  built_splits, copy_splits = set(builder.info.splits), set(source.available_splits())
  for split in sorted(built_splits ^ copy_splits):
    side = "the copy" if split in copy_splits else "the records"
    print(f"build: split {split!r} is only in {side} ({source.describe_split(split)}). Runs read "
          f"the records: delete {builder.data_path} and build again to make them from this copy",
          flush=True)
  for split in sorted(built_splits & copy_splits):
    index = video_records.read_index(video_records.index_path(builder, split))
    if index is None:  # a read-only data dir: no index to compare without reading every record
      continue
    built = {summary.name: summary for summary in index}
    listed = {video.name: video for video in source.videos(split)}
    only_built = [name for name in built if name not in listed]
    only_listed = [name for name in listed if name not in built]
    changed = [f"{name} ({change})" for name in built if name in listed
               for change in [_frames_changed(built[name], listed[name])] if change]
    if only_built or only_listed or changed:
      print(f"build: the kept records of split {split!r} differ from the copy in "
            f"{source.describe_split(split)} (videos: {len(built)} in the records, "
            f"{len(listed)} in the copy); only in the copy: {first_few(only_listed) or 'none'}; "
            f"only in the records: {first_few(only_built) or 'none'}; with other frames in the "
            f"copy: {first_few(changed) or 'none'}. Runs read the records: delete "
            f"{builder.data_path} and build again to make them from this copy", flush=True)


def _frames_changed(built: video_records.VideoSummary, video: base.VideoRecord) -> str:
  """How the copy's `video` differs from its records' (frames, then labelled frames), or ''."""
  labeled = [t for t, frame in enumerate(video.frames) if frame.label is not None]
  if built.num_frames != len(video.frames):
    return f"{built.num_frames} -> {len(video.frames)} frames"
  if list(built.labeled) != labeled:
    return f"{len(built.labeled)} -> {len(labeled)} labelled frames"
  return ""


def _interrupted_builds(builder: _ManualSourceBuilder) -> list[epath.Path]:
  """The folders of killed builds beside the version folders of the builder's records.

  TFDS writes a build into `incomplete.<random>_<version>/` and renames it to `<version>/` once
  complete (removing it where the build raises); a build killed outright (kill -9, out of memory,
  a lost machine) leaves it behind, records (tens of GB for VSPW) and all. TFDS never reads,
  resumes nor removes it, and cannot tell it from the folder of a build running now.
  """
  return sorted(path for path in _beside_version(builder)
                if path.name.startswith(constants.INCOMPLETE_PREFIX) and path.is_dir())


def _size(folder: epath.Path) -> tfds.core.units.Size:
  """A build folder's size: TFDS writes its files flat, shards and metadata side by side."""
  return tfds.core.units.Size(sum(f.stat().length for f in folder.iterdir() if f.is_file()))


def _other_versions(builder: _ManualSourceBuilder) -> list[str]:
  """The versions of the builder's records on disk other than the one this code reads."""
  return sorted(path.name for path in _beside_version(builder)
                if tfds.core.Version.is_valid(path.name) and path.name != str(builder.version))


def _beside_version(builder: _ManualSourceBuilder) -> list[epath.Path]:
  """What the folder of the builder's version folder holds (nothing before a first build)."""
  versions = epath.Path(builder.data_path).parent
  return list(versions.iterdir()) if versions.exists() else []


def load(source_name: str, data_dir: str) -> _ManualSourceBuilder:
  """The already-built records of a real source; raises naming the build command if missing.

  TFDS looks only for the builder's current version, so records of an older layout read as
  missing; the message says so, since they must be rebuilt, not reused."""
  builder, _ = _builder(source_name, data_dir)
  if _is_built(builder):
    return builder
  others = _other_versions(builder)
  found = (f" Found only version {', '.join(others)} there, whose record layout this code cannot "
           f"read ({builder.version}: {builder.RELEASE_NOTES[str(builder.version)]})"
           if others else "")
  interrupted = _interrupted_builds(builder)
  if interrupted:  # the user did run the build: say why it does not count
    found += (f" A build left {', '.join(folder.name for folder in interrupted)} there: one "
              f"killed before it finished, which TFDS can neither read nor resume (delete it), "
              f"unless a build is running now (wait for it).")
  raise SetupError(
      f"no ArrayRecord data of version {builder.version} for source {source_name!r} under "
      f"{data_dir}.{found} Real datasets are never built implicitly: build them with python -m "
      f"data_pipelines.build --source={source_name} --manual_dir=<your copy> "
      f"--data_dir={data_dir}, or use data.backend='files'.")
