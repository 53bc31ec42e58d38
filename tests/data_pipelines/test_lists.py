"""The video lists: ETC's Cityscapes "valsam" TC subset (shipped), and lists of one's own."""
import os
import re
from collections import Counter

import pytest

from data_pipelines.lists import read_list
from vssjax.errors import DataError


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


def test_a_list_of_ones_own_is_read_from_its_path_relative_or_absolute(tmp_path, monkeypatch):
  """A relative path was looked up among the shipped lists and not found there."""
  (tmp_path / "mine.txt").write_text("\ufeffvideo_a\n\n  video_b \n", encoding="utf-8")
  monkeypatch.chdir(tmp_path)
  assert read_list("mine.txt") == read_list(str(tmp_path / "mine.txt")) == ("video_a", "video_b")
  assert len(read_list("cityscapes_valsam.txt")) == 108  # shipped, none of that name here


def test_a_list_found_nowhere_names_both_places_tried(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(FileNotFoundError) as error:
    read_list("missing.txt")
  assert str(tmp_path / "missing.txt") in str(error.value)
  assert os.path.join("data_pipelines", "lists") in str(error.value)


def test_a_tc_video_list_reads_as_a_split_list_does(tmp_path):
  """eval.tc_video_list kept a folder's trailing '/' (VSPW's lists of folders), naming videos the
  split does not hold, and took a name listed twice, as the split lists do not."""
  path = tmp_path / "tc.txt"
  path.write_text("vid_a/\r\nvid_b\n", encoding="utf-8")
  assert read_list(str(path)) == ("vid_a", "vid_b")
  path.write_text("vid_a\nvid_b\nvid_a/\n", encoding="utf-8")
  with pytest.raises(DataError, match=r"tc.txt: lists video vid_a twice: list it once"):
    read_list(str(path))
