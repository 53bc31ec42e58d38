r"""Builds the vtest-pseudo dataset from OpenCV's vtest.avi
(see data_pipelines.sources.vtest_pseudo).

  python -m data_pipelines.make_vtest_pseudo --video=.../vtest.avi \
      --out_dir=~/vssjax_data/vtest_pseudo
"""
from __future__ import annotations

import argparse
import sys

from data_pipelines.sources import vtest_pseudo
from vssjax.command_line import user_errors_in_one_line


@user_errors_in_one_line
def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--video", required=True, help="path to vtest.avi")
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--scale", type=float, default=0.5, help="frame size factor (0.5: 384x288)")
  parser.add_argument("--chunk", type=int, default=60, help="frames per video")
  args = parser.parse_args(argv)
  vtest_pseudo.build(args.video, args.out_dir, args.scale, args.chunk)


if __name__ == "__main__":
  main(sys.argv[1:])
