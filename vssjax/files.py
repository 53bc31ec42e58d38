"""Writing a file whole: no reader, and no later run after a kill mid-write, sees half of it; and
where a path's folder would be made."""

from __future__ import annotations

import os
import uuid
from typing import Callable

from etils import epath

from vssjax.errors import SetupError


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


def nearest_existing(path: str) -> str:
  """`path`, made absolute, if it exists, else its nearest existing parent: where it would be
  made (a local path)."""
  path = os.path.abspath(path)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return path


def file_in_the_way(path: str) -> str | None:
  """The file that a local `path` is, or lies under, where a folder is wanted; None where there is
  none, and for a remote path (`gs://...`), which is left to its store."""
  if "://" in path:
    return None
  existing = nearest_existing(path)
  return None if os.path.isdir(existing) else existing


def check_folder_path(path: str, setting: str) -> None:
  """A local `path` that is, or lies under, a file is a `SetupError` naming `setting`, instead of
  the OSError traceback of the first folder made under it."""
  file = file_in_the_way(path)
  if file is not None:
    raise SetupError(f"{setting}={path}: {file} is a file, not a folder")
