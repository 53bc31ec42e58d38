"""Shared machinery of the PyTorch -> Flax checkpoint converters (no torch import).

A converter is a list of `Rule`s, each building one Flax variable (path 'collection/a/b/leaf')
from one or more PyTorch state_dict entries. `apply_rules` runs them against the model's abstract
variables and fails loudly, naming every offending key at once:
- missing: a rule's source key is not in the checkpoint;
- unexpected: a checkpoint key no rule consumed (and no `drop` pattern matches);
- mis-shaped: a converted tensor does not fit its Flax variable;
- uncovered: a model variable no rule produces (a converter bug or a model/config mismatch).

Layout rules (torch -> Flax): Linear weight (out, in) -> Dense kernel (in, out); Conv2d weight
(out, in/groups, kh, kw) -> Conv kernel (kh, kw, in/groups, out) (depthwise: (kh, kw, 1, C));
LayerNorm weight -> scale; BatchNorm weight/bias -> params scale/bias, running_mean/var ->
batch_stats mean/var, num_batches_tracked dropped.
"""
import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from vssjax.errors import SetupError
from vssjax.listing import first_few

StateDict = Mapping[str, np.ndarray]
Variables = dict[str, Any]

# Buffers that PyTorch saves but no Flax model stores.
DEFAULT_DROP = (r"(^|\.)num_batches_tracked$",)

# The input `abstract_variables` gets for image models: eval_shape only needs parameter shapes,
# which do not depend on the input size.
EXAMPLE_IMAGE = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)


class CheckpointMismatchError(SetupError):
  """The checkpoint does not fit the model; the message lists every offending key."""


def linear_to_dense(weight: np.ndarray) -> np.ndarray:
  return np.transpose(weight)


def conv_to_flax(weight: np.ndarray) -> np.ndarray:
  if weight.ndim != 4:
    raise ValueError(f"expected a 4-D conv weight, got shape {weight.shape}")
  return np.transpose(weight, (2, 3, 1, 0))


def identity(tensor: np.ndarray) -> np.ndarray:
  return tensor


@dataclasses.dataclass(frozen=True)
class Rule:
  """Flax variable `target` = `transform(*state_dict[sources])`."""
  target: str
  sources: tuple[str, ...]
  transform: Callable[..., np.ndarray] = identity


def dense_rules(target: str, source: str) -> list[Rule]:
  """torch `nn.Linear` at `source` -> Flax `nn.Dense` at `target` ('params/...')."""
  return [Rule(f"{target}/kernel", (f"{source}.weight",), linear_to_dense),
          Rule(f"{target}/bias", (f"{source}.bias",))]


def conv_rules(target: str, source: str, *, bias: bool = True) -> list[Rule]:
  """torch `nn.Conv2d` (any groups) -> Flax `nn.Conv` / `DepthwiseConv`."""
  rules = [Rule(f"{target}/kernel", (f"{source}.weight",), conv_to_flax)]
  if bias:
    rules.append(Rule(f"{target}/bias", (f"{source}.bias",)))
  return rules


def layer_norm_rules(target: str, source: str) -> list[Rule]:
  return [Rule(f"{target}/scale", (f"{source}.weight",)),
          Rule(f"{target}/bias", (f"{source}.bias",))]


def batch_norm_rules(target: str, source: str) -> list[Rule]:
  """torch BatchNorm -> our `layers.BatchNorm`; `target` is the module path without collection."""
  return [Rule(f"params/{target}/scale", (f"{source}.weight",)),
          Rule(f"params/{target}/bias", (f"{source}.bias",)),
          Rule(f"batch_stats/{target}/mean", (f"{source}.running_mean",)),
          Rule(f"batch_stats/{target}/var", (f"{source}.running_var",))]


def abstract_variables(model: nn.Module, example: jax.Array | jax.ShapeDtypeStruct,
                       **call_kwargs: Any) -> dict[str, jax.ShapeDtypeStruct]:
  """Flat {'collection/path': ShapeDtypeStruct} of `model.init(example, **call_kwargs)`.

  Runs under `jax.eval_shape`, so it costs no FLOPs or memory even for MiT-B5.
  """
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  tree = jax.eval_shape(lambda x: model.init(rngs, x, **call_kwargs), example)
  return traverse_util.flatten_dict(tree, sep="/")


def _shapes(arrays: Iterable[np.ndarray]) -> str:
  return ", ".join(str(tuple(np.shape(a))) for a in arrays)


def apply_rules(state_dict: StateDict, rules: Sequence[Rule],
                expected: Mapping[str, jax.ShapeDtypeStruct], *,
                drop: Sequence[str] = DEFAULT_DROP,
                display_names: Mapping[str, str] | None = None,
                hints: Sequence[str | None] = (), classifier: str = "") -> Variables:
  """Runs `rules`, checks the result against `expected`; returns nested numpy variables.

  `display_names` maps state_dict keys to the names used in error messages (converters that
  normalise legacy key names pass the original names here). `hints`: what the error says first
  if the checkpoint does not fit, those not None (e.g. `mit_layout.mit_mismatch`'s line).
  `classifier`: the model's class-scoring convolution (its Flax path, without `/kernel`), whose
  class count, if the checkpoint's differs, is said in a line of its own.
  """
  def shown(key: str) -> str:
    return (display_names or {}).get(key, key)

  consumed: set[str] = set()
  missing, misshaped, out = [], [], {}
  for rule in rules:
    consumed.update(rule.sources)
    absent = [s for s in rule.sources if s not in state_dict]
    if absent:
      missing.extend(absent)
      continue
    names = " + ".join(shown(s) for s in rule.sources)
    value, problem = _convert_one(rule, state_dict, expected)
    if problem:
      misshaped.append(f"{names}: {problem}")
    else:
      out[rule.target] = value
  unexpected_keys = [k for k in state_dict
                     if k not in consumed and not any(re.search(p, k) for p in drop)]
  unexpected = sorted(map(shown, unexpected_keys))
  targets = {rule.target for rule in rules}
  uncovered = sorted(t for t in expected if t not in targets)
  if missing or unexpected or misshaped or uncovered:
    hints = [*hints, _classes_hint(state_dict, rules, expected, classifier, shown),
             _other_modules(missing, unexpected_keys, state_dict, consumed)]
    raise CheckpointMismatchError(_mismatch_message(
        [h for h in hints if h], [shown(k) for k in missing], unexpected, misshaped, uncovered))
  return traverse_util.unflatten_dict(out, sep="/")


def _classes_hint(state_dict: StateDict, rules: Sequence[Rule],
                  expected: Mapping[str, jax.ShapeDtypeStruct], classifier: str,
                  shown: Callable[[str], str]) -> str | None:
  """The line saying that the checkpoint scores another number of classes than the config's
  (an ADE20K or Cityscapes model for a VSPW config), which the mis-shaped keys alone leave to be
  read from their shapes; None if the counts agree or `classifier` is not converted."""
  target = f"{classifier}/kernel"
  rule = next((rule for rule in rules if rule.target == target), None)
  if rule is None or target not in expected or rule.sources[0] not in state_dict:
    return None
  shape = np.shape(state_dict[rule.sources[0]])  # torch's [out, in, kh, kw]
  found, wanted = (shape or (None,))[0], int(expected[target].shape[-1])  # Flax's [.., in, out]
  if found is None or found == wanted:
    return None
  return (f"the checkpoint scores {found} classes ({shown(rule.sources[0])}), the config's "
          f"data.num_classes is {wanted}: a model of another dataset? (VSPW has 124 classes, "
          "Cityscapes 19, CamVid 11, ADE20K 150)")


def width_hint(state_dict: StateDict, key: str, wanted: int, setting: str,
               display_names: Mapping[str, str] | None = None) -> str | None:
  """The line naming config field `setting` when the checkpoint's weight `key` ([out, ...]) is
  not `wanted` wide: a head of another width than the config's (SegFormer's own 768-wide B2-B5
  head against the VSPW configs' 256) mis-shapes a dozen keys, which name no setting. The key is
  named as `display_names` (`apply_rules`') map it."""
  weight = state_dict.get(key)
  width = None if weight is None else int(np.shape(weight)[0])
  if width is None or width == wanted:
    return None
  shown = (display_names or {}).get(key, key)
  return (f"the checkpoint's {shown} is {width} wide, the config's {setting} is {wanted}: pass "
          f"--config.{setting}={width}")


def _convert_one(rule: Rule, state_dict: StateDict, expected: Mapping[str, Any]
                 ) -> tuple[np.ndarray | None, str | None]:
  """(converted value, None) or (None, why it does not fit the model)."""
  tensors = [np.asarray(state_dict[s]) for s in rule.sources]
  spec = expected.get(rule.target)
  if spec is None:
    return None, f"no model variable {rule.target}"
  try:
    value = rule.transform(*tensors)
  except ValueError as err:
    value, reason = None, f" ({err})"
  else:
    reason = ""
  if value is None or value.shape != tuple(spec.shape):
    return None, f"shape {_shapes(tensors)} does not fit {rule.target} {tuple(spec.shape)}{reason}"
  return value.astype(spec.dtype), None


# Keys shown per kind in a mismatch: a checkpoint of another model misses hundreds, and the
# first ones, the counts and the hints say what the rest would.
_SHOWN_KEYS = 10


def _other_modules(missing: Sequence[str], unexpected: Sequence[str], state_dict: StateDict,
                   consumed: set[str]) -> str | None:
  """The modules (first two name parts) the converter reads that the checkpoint has no key of at
  all, and those of the checkpoint that the converter reads nothing of: a checkpoint of another
  model or method (a plain SegFormer's for DTERN, DTERN's for a SegFormer), rather than another
  size of the same one."""
  def modules(keys: Iterable[str], others: Iterable[str]) -> list[str]:
    others = list(others)
    return [m for m in dict.fromkeys(".".join(key.split(".")[:2]) for key in keys)
            if not any(other.startswith(m + ".") for other in others)]

  absent, unread = modules(missing, state_dict), modules(unexpected, consumed)
  said = ([f"has no keys under {first_few(absent)}"] if absent else []) + (
      [f"has keys under {first_few(unread)}, of which the config's model reads nothing"]
      if unread else [])
  if not said:
    return None
  return (f"the checkpoint {' and '.join(said)}: a checkpoint of another model or method than "
          "the config's?")


def _mismatch_message(hints: Sequence[str], missing: Sequence[str], unexpected: Sequence[str],
                      misshaped: Sequence[str], uncovered: Sequence[str]) -> str:
  """The counts of each kind of mismatch, the hints, then the first keys of each kind."""
  kinds = [(title, items) for title, items in (
      ("missing keys", missing), ("unexpected keys", unexpected),
      ("mis-shaped keys", misshaped), ("model variables no rule produces", uncovered)) if items]
  lines = ["checkpoint does not match the model ("
           + ", ".join(f"{len(items)} {title}" for title, items in kinds) + ")", *hints]
  for title, items in kinds:
    rest = len(items) - _SHOWN_KEYS
    lines += [f"{title} ({len(items)}):", *(f"  {item}" for item in items[:_SHOWN_KEYS])]
    lines += [f"  ... and {rest} more"] if rest > 0 else []
  return "\n".join(lines)


def rename_keys(state_dict: StateDict, renames: Sequence[tuple[str, str]]
                ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """Applies regex `renames` in order to every key; returns (renamed dict, new -> original name).

  Two keys that land on the same name (e.g. a file mixing two naming schemes) are an error.
  """
  renamed, original = {}, {}
  for key, value in state_dict.items():
    new = key
    for pattern, replacement in renames:
      new = re.sub(pattern, replacement, new)
    if new in renamed:
      raise CheckpointMismatchError(
          f"keys {original[new]!r} and {key!r} both map to {new!r}")
    renamed[new], original[new] = value, key
  return renamed, original
