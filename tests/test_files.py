"""Tests for vssjax/files.py."""

import pytest

from vssjax.files import write_text_whole


def test_write_text_whole_replaces_the_file_and_leaves_nothing_beside_it(tmp_path):
  path = tmp_path / "results.json"
  path.write_text("earlier")
  write_text_whole(path, "later")
  assert path.read_text() == "later"
  assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_failed_write_keeps_the_earlier_file_whole(tmp_path):
  path = tmp_path / "config.json"
  path.write_text("earlier")
  with pytest.raises(UnicodeEncodeError):
    write_text_whole(path, "a lone surrogate cannot be encoded: \ud800")
  assert path.read_text() == "earlier"
  assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
