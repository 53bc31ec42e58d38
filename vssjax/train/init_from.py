"""Starting a train state from released PyTorch weights (HF transformers or mmseg checkpoints).

Used twice: by the train loop when `config.init.torch_checkpoint` is set and the workdir has no
checkpoint yet (fine-tuning), and by `python -m vssjax.convert`, which saves the result as a step-0
Orbax checkpoint that `--mode=eval` evaluates directly.

Converters are looked up by (method name, checkpoint format) and imported lazily, like methods. A
new method registers its converter in `_CONVERTERS` as "module:function"; the function takes
(state_dict, the method's Flax module) and returns {'params', 'batch_stats', ...}.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import jax
import optax

from vssjax.configs_lib import ConfigDict
from vssjax.convert.common import CheckpointMismatchError, StateDict, Variables
from vssjax.convert.torch_io import load_state_dict
from vssjax.methods.base import Method
from vssjax.train.state import TrainState

_CONVERTERS = {
    ("segformer", "hf"): "vssjax.convert.hf_segformer:convert_hf_segformer",
    ("segformer", "mmseg"): "vssjax.convert.mmseg_segformer:convert_mmseg_segformer",
}
FORMATS = ("hf", "mmseg")


def detect_format(state_dict: StateDict) -> str:
  """'hf' for transformers files (keys under `segformer.`), 'mmseg' for `backbone.`/`decode_head.`.

  HF SegFormer checkpoints also hold `decode_head.*` keys, so 'hf' is tested first.
  """
  if any(k.startswith("segformer.") for k in state_dict):
    return "hf"
  if any(k.startswith(("backbone.", "decode_head.")) for k in state_dict):
    return "mmseg"
  sample = ", ".join(sorted(state_dict)[:5])
  raise ValueError(f"cannot tell the checkpoint format from its keys (first: {sample}); "
                   f"pass it explicitly, one of {FORMATS}")


def convert_state_dict(state_dict: StateDict, method: Method, fmt: str | None = None
                       ) -> Variables:
  """Converts a loaded state_dict for `method` (format auto-detected when `fmt` is None)."""
  fmt = fmt or detect_format(state_dict)
  name = method.config.method.name
  if (name, fmt) not in _CONVERTERS:
    known = sorted(f"{m}/{f}" for m, f in _CONVERTERS)
    raise ValueError(f"no converter for method {name!r} from {fmt!r} checkpoints; known: {known}")
  module_name, function = _CONVERTERS[(name, fmt)].split(":")
  convert = getattr(importlib.import_module(module_name), function)
  return convert(state_dict, method.module)


def load_torch_variables(path: str, method: Method, fmt: str | None = None, *,
                         allow_pickle: bool = False) -> Variables:
  """Reads the checkpoint file at `path` and converts it for `method`."""
  state_dict = load_state_dict(path, allow_pickle=allow_pickle)
  print(f"converting {path}: {len(state_dict)} tensors, format "
        f"{fmt or detect_format(state_dict)}", flush=True)
  return convert_state_dict(state_dict, method, fmt)


def _check_same_tree(converted: Any, fresh: Any, what: str) -> None:
  """The converter checks against the module; this guards against a config/method mismatch."""
  shapes = lambda tree: jax.tree.map(lambda a: tuple(a.shape), tree)  # noqa: E731
  if shapes(converted) != shapes(fresh):
    raise CheckpointMismatchError(
        f"converted {what} do not have the structure or shapes of the method's {what}")


def state_with_variables(state: TrainState, variables: Mapping[str, Any],
                         tx: optax.GradientTransformation, sharding: Any) -> TrainState:
  """`state` with its params and model state replaced, a fresh optimizer state, placed by
  `sharding`. The step is kept (0 for a fresh state)."""
  params = variables["params"]
  model_state = {k: v for k, v in variables.items() if k != "params"}
  _check_same_tree(params, state.params, "params")
  _check_same_tree(model_state, dict(state.model_state), "model state")
  new = TrainState(step=state.step, params=params, model_state=model_state,
                   opt_state=tx.init(params))
  return jax.device_put(new, sharding)


def state_from_torch(config: ConfigDict, method: Method, state: TrainState,
                     tx: optax.GradientTransformation, sharding: Any, *, fmt: str | None = None,
                     allow_pickle: bool = False) -> TrainState:
  """A fresh `state` whose variables come from `config.init.torch_checkpoint`."""
  variables = load_torch_variables(config.init.torch_checkpoint, method, fmt,
                                   allow_pickle=allow_pickle)
  return state_with_variables(state, variables, tx, sharding)
