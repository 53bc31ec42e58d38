"""Writing a text file whole: no reader, and no later run after a kill mid-write, sees half of it."""

from __future__ import annotations

import os
import uuid

from etils import epath


def write_text_whole(path: str | os.PathLike | epath.Path, text: str) -> None:
  """Writes `text` to `path` through a hidden file of its own beside it, renamed over `path`.

  The rename is atomic: a run killed mid-write leaves the earlier file whole (a truncated
  config.json failed every later resume to parse), and writers that race — hosts of a multi-host
  run sharing a folder, whose pids may coincide — each replace it whole rather than renaming one
  another's half-written file."""
  path = epath.Path(path)
  provisional = path.parent / f".{path.name}.{uuid.uuid4().hex}.partial"
  try:
    provisional.write_text(text)
  except BaseException:
    provisional.unlink(missing_ok=True)
    raise
  provisional.replace(path)
