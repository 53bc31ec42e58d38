"""Video lists shipped as package data: the clip subsets that published protocols evaluate on.

`cityscapes_valsam.txt`: ETC's TC subset "valsam" (specs/etc.md §6 and Appendix A), 108 of the
500 Cityscapes val snippets (56 frankfurt, 20 lindau, 32 munster), one per line as the annotated
frame's `<city>_<seq>_<frame>`, which is exactly `CityscapesSource`'s video name; each clip is
the snippet frames a-19 .. a+10.
"""
from __future__ import annotations

from importlib import resources


def read_list(filename: str) -> tuple[str, ...]:
  """The non-empty lines of the shipped list `filename`, in file order."""
  text = resources.files(__name__).joinpath(filename).read_text(encoding="utf-8")
  return tuple(line.strip() for line in text.splitlines() if line.strip())
