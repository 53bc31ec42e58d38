"""Checks and model sizes shared by the model tests."""
import jax
import numpy as np
import torch
from flax import linen as nn
from scipy import stats

# A narrow B0-shaped MiT keeps compiles short; the architecture code path is the full one.
TINY_MIT = dict(embed_dims=(8, 16, 24, 32), num_heads=(1, 2, 3, 4), depths=(1, 2, 1, 1))


def assert_torch_default_init(torch_layer: torch.nn.Module, kernel, bias=None) -> None:
  """`kernel` (and `bias`) are distributed as `torch_layer`'s freshly initialised weight (and
  bias): PyTorch's `reset_parameters` default U(-b, b), b = 1/sqrt(fan_in), fan_in being torch's
  own (in_channels / groups * kh * kw, from the torch weight's shape).

  Checked per leaf: same number of entries, |x| <= b, std within 5 standard errors of b/sqrt(3),
  no zeros, and a two-sample Kolmogorov-Smirnov test against torch's draw.
  """
  torch.manual_seed(0)
  torch_layer.reset_parameters()
  weight = torch_layer.weight.detach().numpy()
  bound = 1.0 / np.sqrt(weight[0].size)
  pairs = [(kernel, weight)]
  if bias is not None:
    pairs.append((bias, torch_layer.bias.detach().numpy()))
  for ours, theirs in pairs:
    ours = np.asarray(ours, np.float64).ravel()
    assert ours.size == theirs.size
    assert np.abs(ours).max() <= bound * (1 + 1e-6)
    assert np.all(ours != 0)
    # The sample std of a uniform draw has a relative standard error of ~0.45 / sqrt(n).
    assert abs(ours.std() * np.sqrt(3) / bound - 1) < 5 * 0.45 / np.sqrt(ours.size)
    assert stats.ks_2samp(ours, theirs.ravel()).pvalue > 1e-3


def layer_norm_epsilons(module: nn.Module, *args, **kwargs) -> dict[str, float]:
  """Each nn.LayerNorm's eps in `module.init(key, *args, **kwargs)` (traced, nothing computed),
  by its path below `module`. A parity test whose activations have unit variance hardly sees a
  wrong eps (1e-6 for 1e-5 moves them by ~1e-5), so the tests read the eps off the modules."""
  epsilons = {}

  def record(next_fun, call_args, call_kwargs, context):
    if isinstance(context.module, nn.LayerNorm) and context.method_name == "__call__":
      epsilons["/".join(context.module.path)] = context.module.epsilon
    return next_fun(*call_args, **call_kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda *a: module.init(jax.random.key(0), *a, **kwargs), *args)
  return epsilons


def dropout_calls(apply) -> list[tuple[np.ndarray, np.ndarray]]:
  """(input, output) of every `nn.Dropout` call that `apply()` makes, in order (a subclass's, such
  as `layers.Dropout`, once: not again for its call of `nn.Dropout.__call__`)."""
  calls, inside = [], []

  def record(next_fun, args, kwargs, context):
    if (inside or not isinstance(context.module, nn.Dropout)
        or context.method_name != "__call__"):
      return next_fun(*args, **kwargs)
    inside.append(context.module)
    try:
      out = next_fun(*args, **kwargs)
    finally:
      inside.pop()
    calls.append((np.asarray(args[0]), np.asarray(out)))
    return out

  with nn.intercept_methods(record):
    apply()
  return calls


def assert_whole_channels_dropped(before, after, rate: float) -> None:
  """Dropout2d: each (sample, channel) of `after` [B, H, W, C] is zero over H and W or `before`
  scaled by 1/(1 - rate) over H and W, and both occur (`before` non-zero everywhere)."""
  before, after = np.asarray(before), np.asarray(after)
  assert np.all(before != 0)
  dropped = (after == 0).all(axis=(1, 2))  # [B, C]
  kept = np.isclose(after, before / (1 - rate), rtol=1e-6, atol=0).all(axis=(1, 2))
  assert np.all(dropped | kept)
  assert dropped.any() and kept.any()
