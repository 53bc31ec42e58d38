"""Tests for vssjax/files.py."""

import pytest

from vssjax.errors import SetupError
from vssjax.files import check_folder_path, nearest_existing, write_text_whole


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


def test_a_folder_path_at_or_under_a_file_names_the_setting_and_the_file(tmp_path):
  """`--config.data.data_dir=<a file>` was a NotADirectoryError traceback from the first folder
  TFDS made under it."""
  (tmp_path / "notes").write_text("")
  assert nearest_existing(str(tmp_path / "new" / "deeper")) == str(tmp_path)
  for path in (tmp_path / "notes", tmp_path / "notes" / "tfds"):
    with pytest.raises(SetupError, match=rf"^data\.data_dir={path}: {tmp_path}/notes is a file, "
                       "not a folder$"):
      check_folder_path(str(path), "data.data_dir")
  check_folder_path(str(tmp_path / "new" / "tfds"), "data.data_dir")  # made when needed
  check_folder_path("gs://bucket/tfds", "data.data_dir")  # the store's to refuse
