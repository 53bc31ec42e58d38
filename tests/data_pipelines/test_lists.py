"""The shipped video lists: ETC's Cityscapes "valsam" TC subset."""
import re
from collections import Counter

from data_pipelines.lists import read_list


def test_cityscapes_valsam_has_108_unique_cityscapes_val_snippets():
  names = read_list("cityscapes_valsam.txt")  # as eval.tc_video_list reads it
  assert len(names) == len(set(names)) == 108
  assert all(re.fullmatch(r"(frankfurt|lindau|munster)_\d{6}_\d{6}", name) for name in names)
  assert Counter(name.split("_")[0] for name in names) == {
      "frankfurt": 56, "lindau": 20, "munster": 32}
  # Names are CityscapesSource video names: the annotated frame, the 20th of its snippet (019
  # for lindau/munster; frankfurt's snippets are numbered continuously).
  assert names[0] == "frankfurt_000000_001016" and names[-1] == "munster_000169_000019"
  assert all(name.endswith("_000019") for name in names if not name.startswith("frankfurt"))
