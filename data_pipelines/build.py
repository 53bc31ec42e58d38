r"""Builds a real dataset's TFDS ArrayRecord records from the user's copy, showing progress.

  python -m data_pipelines.build --source=vspw --manual_dir=/data/VSPW_480p \
      --data_dir=~/tensorflow_datasets

Sources: vspw, cityscapes, camvid, vtest_pseudo. Every frame is decoded once while building, so bad
data fails here, naming the file. Each frame is one record; each split also gets its video index
(`video_records`), which readers use to find a video's frames. Run again where the index is missing
(an interrupted build), it writes just the index; a build killed before its records were complete
leaves TFDS's `incomplete.*` folder, which the next build names with its size, to be deleted.
Training then reads the records with data.backend='arrayrecord' and data.data_dir set to the same
--data_dir.
"""
from __future__ import annotations

import argparse
import sys
import time

from data_pipelines.tfds_builders import real_videos
from vssjax.command_line import user_errors_in_one_line


@user_errors_in_one_line
def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--source", required=True, choices=sorted(real_videos.BUILDERS))
  parser.add_argument("--manual_dir", required=True, help="the dataset's extracted folder")
  parser.add_argument("--data_dir", default="~/tensorflow_datasets")
  args = parser.parse_args(argv)
  started = time.perf_counter()
  print(f"build: {args.source} from {args.manual_dir} into {args.data_dir}", flush=True)
  builder = real_videos.prepare(args.source, args.manual_dir, args.data_dir)
  splits = ", ".join(f"{name} {split.num_examples} frames"
                     for name, split in builder.info.splits.items())
  print(f"build: done in {time.perf_counter() - started:.1f} s: {splits} -> {builder.data_path}",
        flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
