"""What the train loop, the evaluator and `--mode=infer` require of a method's outputs
(docs/extending.md, "How a method plugs in"), checked where they first see them.

A new method's slip (the new model state left out of `loss_and_metrics`'s return, a per-pixel
loss, a predictor answering bare label maps or maps at the network's size) otherwise surfaces as an
unpacking or pytree error deep in the train step, or as a crash of the overlay after training,
naming neither the method nor the rule. The training checks run while the step is traced (no cost
per step); the predictions' on the host, once per answer.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from vssjax.errors import SetupError

_TRAINING_RETURN = "(loss, (metrics, new_model_state))"


def check_init_variables(method: Any, variables: Any) -> None:
  """`method.init`'s return: the dict of collections that `module.init` returns."""
  if not isinstance(variables, Mapping) or "params" not in variables:
    got = (f"a dict of {sorted(variables)}" if isinstance(variables, Mapping)
           else _described(variables))
    raise SetupError(f"{type(method).__name__}.init returned {got}: it returns the module's "
                     "variables as a dict of collections, {'params': ..., 'batch_stats': ...} "
                     "(all that module.init returns)")


def check_training_outputs(method: Any, outputs: Any, model_state: Mapping[str, Any]) -> None:
  """`method.loss_and_metrics`'s return, given the `model_state` it was called with."""
  where = f"{type(method).__name__}.loss_and_metrics"
  if not (isinstance(outputs, tuple) and len(outputs) == 2 and isinstance(outputs[1], tuple)
          and len(outputs[1]) == 2):
    raise SetupError(f"{where} returned {_described(outputs)}: it returns {_TRAINING_RETURN}")
  loss, (metrics, new_state) = outputs
  if np.shape(loss) != ():
    raise SetupError(f"{where}: the loss has shape {np.shape(loss)}, and must be one number, "
                     "the gradient's target (average a per-pixel loss)")
  if not isinstance(metrics, Mapping) or "loss" not in metrics:
    got = f"keys {sorted(metrics)}" if isinstance(metrics, Mapping) else _described(metrics)
    raise SetupError(f"{where}: its metrics must be a dict that holds 'loss' (the log's loss), "
                     f"in {_TRAINING_RETURN}; got {got}")
  # np.shape of a dict or of a list of scalars is () or the list's: a nested dict passed as a
  # scalar and failed at the first log line, after the steps had run.
  shapes = {name: _described(value) if isinstance(value, (Mapping, list, tuple))
            else np.shape(value) for name, value in metrics.items()}
  vectors = {name: shape for name, shape in shapes.items() if shape != ()}
  if vectors:
    raise SetupError(f"{where}: metrics {vectors} are not scalars: the loop logs one number per "
                     "metric (name the parts of a nested one 'parts/ce', ...)")
  if jax.tree.structure(new_state) != jax.tree.structure(dict(model_state)):
    same_names = isinstance(new_state, Mapping) and sorted(new_state) == sorted(model_state)
    if same_names:  # a collection with other variables, or another kind of dict
      got = [name for name in model_state
             if jax.tree.structure(new_state[name]) != jax.tree.structure(model_state[name])]
      got = f"{got} with other variables" if got else f"a {type(new_state).__name__}"
    else:
      got = sorted(new_state) if isinstance(new_state, Mapping) else _described(new_state)
    raise SetupError(
        f"{where}: its new model state ({got}) is not shaped as the model_state it was given "
        f"({sorted(model_state)}, what init returned besides 'params'): return every "
        "collection of model_state in a dict, the module's updated ones (apply with "
        "mutable=['batch_stats']) and any other as it came")


def check_answers(predictor_name: str, answers: Any) -> None:
  """A predictor's `push`/`flush` return: a list of (frame index, label map) pairs."""
  if not isinstance(answers, list):
    raise SetupError(f"{predictor_name}.push/flush returned {_described(answers)}: they return a "
                     "list of (frame index, label map) pairs, [] when none is ready")
  for answer in answers:
    if not (isinstance(answer, tuple) and len(answer) == 2
            and isinstance(answer[0], numbers.Integral)):
      raise SetupError(f"{predictor_name}.push/flush answered {_described(answer)} in its list: "
                       "each answer is a (frame index, label map) pair")


def check_label_map(predictor_name: str, index: int, labels: np.ndarray, frame_hw: tuple[int, ...],
                    num_classes: int) -> None:
  """A predictor's label map of frame `index`: integer class ids at the frame's own size."""
  where = f"{predictor_name}'s label map of frame {index}"
  if labels.shape != tuple(frame_hw):
    raise SetupError(f"{where} has shape {labels.shape}, the frame {tuple(frame_hw)}: a map is "
                     "[H, W] at the size of the frame pushed (per_frame.frame_labels brings "
                     "logits there)")
  if not np.issubdtype(labels.dtype, np.integer):
    raise SetupError(f"{where} has dtype {labels.dtype}: class ids are integers (the argmax)")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise SetupError(f"{where} holds class ids from {labels.min()} to {labels.max()}, outside "
                     f"[0, {num_classes}) (data.num_classes)")


def _described(value: Any) -> str:
  """A returned value's structure as an error names it: `(array, dict)`, `[(int, array)]`,
  `array of shape (2, 3)`."""
  if isinstance(value, tuple):
    return "(" + ", ".join(_described(item) for item in value) + ")"
  if isinstance(value, list):
    return "[" + ", ".join(_described(item) for item in value[:3]) + (
        ", ..." if len(value) > 3 else "") + "]"
  if isinstance(value, Mapping):
    return "dict"
  shape = getattr(value, "shape", None)
  if shape is not None:
    return f"array of shape {tuple(shape)}" if shape else "array"
  return type(value).__name__
