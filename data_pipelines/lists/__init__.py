"""Video lists shipped as package data: the clip subsets that published protocols evaluate on.

`cityscapes_valsam.txt`: ETC's TC subset "valsam" (specs/etc.md §6 and Appendix A), 108 of the
500 Cityscapes val snippets (56 frankfurt, 20 lindau, 32 munster), one per line as the annotated
frame's `<city>_<seq>_<frame>`, which is exactly `CityscapesSource`'s video name; each clip is
the snippet frames a-19 .. a+10.
"""
from __future__ import annotations

import os
from importlib import resources

from vssjax.errors import DataError


def read_list(name: str) -> tuple[str, ...]:
  """The non-empty lines of the list `name`, in file order: a file of that path (absolute, or
  relative to the working directory) if there is one, else the list of that name shipped here.

  A list of one's own is a path, as every other file a config names; the shipped ones keep their
  bare names ('cityscapes_valsam.txt'). Neither there: a FileNotFoundError naming both places.
  """
  if os.path.isfile(name):
    with open(name, encoding="utf-8-sig") as f:  # a Windows editor's byte-order mark too
      text = f.read()
  else:
    shipped = resources.files(__name__).joinpath(name)
    if not shipped.is_file():
      raise FileNotFoundError(f"video list {name!r}: no file {os.path.abspath(name)}, nor a list "
                              f"of that name shipped in {resources.files(__name__)}")
    text = shipped.read_text(encoding="utf-8-sig")
  return video_names(text, name)


def video_names(text: str, where: str) -> tuple[str, ...]:
  """The video names of a list's `text`, one a line, in order: blank lines, surrounding spaces,
  Windows line ends and a trailing `/` (a list of folders) are tolerated. A name listed twice is
  refused (a DataError naming `where`): its video would be trained on twice as often and scored
  twice."""
  names = tuple(line.strip().rstrip("/") for line in text.splitlines() if line.strip())
  seen = set()
  for name in names:
    if name in seen:
      raise DataError(where, f"lists video {name} twice: list it once")
    seen.add(name)
  return names
