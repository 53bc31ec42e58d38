"""A video's frames through a streaming predictor, its answers taken back in frame order: the loop
the evaluator and `--mode=infer` share."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import jax
import numpy as np

from vssjax.errors import SetupError
from vssjax.eval.shots import ShotPredictor
from vssjax.methods.base import Prediction
from vssjax.methods.contract import check_label_map


def stream_predictions(predictor: ShotPredictor, frames: Iterable[tuple[str, np.ndarray]],
                       num_classes: int,
                       after_push: Callable[[int], None] = lambda pushed: None
                       ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
  """Pushes `frames` ((name, RGB frame) pairs, the name for `ShotPredictor.push`'s note) one by
  one, flushes the predictor after the last, and yields (index, frame, label map as numpy) of
  every frame, in frame order.

  A push's answers are fetched from the device and yielded after the next push is dispatched: the
  device predicts a frame while the consumer handles the frame before. `after_push(count)` follows
  each push once the answers before it were handled (a progress line, a frame's time). A frame is
  held only until it is yielded, so a long video is never held whole.

  A predictor may answer frames in any order (docs/extending.md), but each frame pushed exactly
  once: an answer for a frame answered before or never pushed, and a frame without an answer at
  the end, are a SetupError (a method's slip, said in one line as the other contract rules are),
  and so is a label map that is not class ids below `num_classes` at its frame's size
  (`contract.check_label_map`).
  """
  held: dict[int, np.ndarray] = {}  # frames pushed and not yet yielded
  answered: dict[int, np.ndarray | jax.Array] = {}  # label maps waiting for an earlier frame's
  next_index = 0  # the frame to yield next
  pushed = 0

  def in_order(ready: list[Prediction], given: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yields what `ready`, answered once `given` frames were pushed, lets come in order."""
    nonlocal next_index
    for index, labels in ready:
      if not 0 <= index < given or index not in held or index in answered:
        said = " twice" if 0 <= index < given else f", which it was not given ({given} pushed)"
        raise SetupError(f"{predictor.name} answered frame {index}{said}: every frame must come "
                           "back exactly once")
      answered[index] = labels
    while next_index in answered:
      index, next_index = next_index, next_index + 1
      labels = np.asarray(answered.pop(index))
      check_label_map(predictor.name, index, labels, held[index].shape[:2], num_classes)
      yield index, held.pop(index), labels  # no name kept for the frame: held no longer

  ready: list[Prediction] = []
  for name, frame in frames:
    held[pushed] = frame
    ready, previous = predictor.push(frame, name), ready
    pushed += 1
    yield from in_order(previous, pushed - 1)
    after_push(pushed)
  yield from in_order(ready + predictor.flush(), pushed)
  if held:
    # The frames left are the unanswered ones and the answered ones queued behind the first of
    # them (yielded in frame order): only the former were never answered.
    missing = sorted(set(held) - set(answered))
    queued = len(held) - len(missing)
    behind = f", which held back the {queued} answered after it" if queued else ""
    raise SetupError(f"{predictor.name} never answered {len(missing)} of the {pushed} frames "
                       f"pushed (the first: frame {missing[0]}{behind}): every frame must come "
                       "back exactly once")
