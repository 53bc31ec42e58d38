"""Writing a file whole: no reader, and no later run after a kill mid-write, sees half of it."""

from __future__ import annotations

import os
import uuid
from typing import Callable

from etils import epath


def write_whole(path: str | os.PathLike | epath.Path, write: Callable[[epath.Path], None]) -> None:
  """`write(provisional)` writes the file, to a hidden path of its own beside `path`, which is then
  renamed over `path` (removed if `write` fails).

  The rename is atomic: a run killed mid-write leaves the earlier file whole (a truncated
  config.json failed every later resume to parse), and writers that race — hosts of a multi-host
  run sharing a folder, whose pids may coincide — each replace it whole rather than renaming one
  another's half-written file."""
  path = epath.Path(path)
  provisional = path.parent / f".{path.name}.{uuid.uuid4().hex}.partial"
  try:
    write(provisional)
  except BaseException:
    provisional.unlink(missing_ok=True)
    raise
  provisional.replace(path)


def write_text_whole(path: str | os.PathLike | epath.Path, text: str) -> None:
  """Writes `text` to `path` whole (`write_whole`)."""
  write_whole(path, lambda provisional: provisional.write_text(text))
