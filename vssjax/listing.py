"""Names said in one line: a message names the first few and counts the others."""

from __future__ import annotations

from collections.abc import Sequence


def first_few(names: Sequence[str], shown: int = 3) -> str:
  """'a, b, c and 4 more': the first `shown` of `names` and a count of the rest ('' for none)."""
  more = f" and {len(names) - shown} more" if len(names) > shown else ""
  return ", ".join(names[:shown]) + more
