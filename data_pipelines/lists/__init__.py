"""Video lists shipped as package data: the clip subsets that published protocols evaluate on.

`cityscapes_valsam.txt`: ETC's TC subset "valsam" (specs/etc.md §6 and Appendix A), 108 of the
500 Cityscapes val snippets (56 frankfurt, 20 lindau, 32 munster), one per line as the annotated
frame's `<city>_<seq>_<frame>`, which is exactly `CityscapesSource`'s video name; each clip is
the snippet frames a-19 .. a+10.
"""
from __future__ import annotations

import os
from importlib import resources


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
  return tuple(line.strip() for line in text.splitlines() if line.strip())
