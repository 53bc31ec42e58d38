"""AdamW (or SGD) with mmcv-style parameter groups and the mmcv poly schedule with linear warm-up.

The published methods were trained with mmcv's optimizer constructor: `custom_keys` give some
parameters a learning-rate multiplier (the decode head x10) or a weight-decay multiplier (0 for
norms and position blocks). Here each group is an independent `optax.adamw` (or SGD, for
`optim.name='sgd'`) under `optax.multi_transform`; PyTorch's AdamW update (decoupled decay on the
current weights, eps added to sqrt(v_hat)) is exactly optax's.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from vssjax.configs_lib import ConfigDict
from vssjax.errors import SetupError
from vssjax.parallel import path_name


def poly_warmup_schedule(
    base_lr: float, total_steps: int | jax.Array, warmup_steps: int, warmup_ratio: float,
    power: float, min_lr: float, poly_after_warmup: bool = False
) -> Callable[[jax.Array], jax.Array]:
  """mmcv PolyLrUpdaterHook + linear warm-up, evaluated at the 0-based iteration `step`.

  lr(i) = (base - min) * (1 - i/total)^power + min, and during warm-up it is scaled by
  1 - (1 - i/warmup) * (1 - warmup_ratio), as mmcv's `get_warmup_lr` does.
  `poly_after_warmup` is DCFM's PolyScheduler (specs/dcfm.md §6.1) instead: the warm-up ramps the
  base lr, and the poly decay runs over the steps after it, (1 - (i - warmup)/(total - warmup)).
  """

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    start = warmup_steps if poly_after_warmup else 0
    progress = jnp.clip((step - start) / jnp.maximum(total_steps - start, 1), 0.0, 1.0)
    lr = (base_lr - min_lr) * (1.0 - progress) ** power + min_lr
    if warmup_steps > 0:
      # 1 - (1 - x)(1 - ratio) rewritten as ratio + x(1 - ratio): no float32 cancellation.
      factor = warmup_ratio + (step / warmup_steps) * (1.0 - warmup_ratio)
      lr = jnp.where(step < warmup_steps, (base_lr if poly_after_warmup else lr) * factor, lr)
    return lr

  return schedule


def param_group_labels(params: Any, groups: tuple) -> Any:
  """Labels every parameter with the index of the first group whose regex matches its path.

  Parameters no rule matches get the default label `len(groups)` (multipliers 1, 1).
  """
  patterns = [re.compile(g[0]) for g in groups]

  def label(path, _):
    name = path_name(path)
    for i, pattern in enumerate(patterns):
      if pattern.search(name):
        return i
    return len(groups)

  return jax.tree_util.tree_map_with_path(label, params)


def lr_schedule(optim: ConfigDict, total_steps: int | jax.Array, base_lr: float
                ) -> Callable[[jax.Array], jax.Array]:
  """`optim`'s learning rate from `base_lr` over `total_steps` train steps, at a 0-based step."""
  return poly_warmup_schedule(base_lr, total_steps, optim.warmup_steps, optim.warmup_ratio,
                              optim.power, optim.min_lr, optim.poly_after_warmup)


def make_optimizer(optim: ConfigDict, total_steps: int | jax.Array, params: Any) -> tuple[
    optax.GradientTransformation, Callable[[jax.Array], jax.Array]]:
  """Builds the full transformation (clip -> grouped AdamW -> accumulation) and the base schedule.

  `total_steps` (the schedule's length, `train.steps`) may be a traced scalar: the train step takes
  it as an argument (`optimizer_for`), so that its program does not depend on it."""
  check_counts(optim)
  schedule_from = functools.partial(lr_schedule, optim, total_steps)  # of a base learning rate
  schedule = schedule_from(optim.lr)
  groups = tuple(tuple(g) for g in optim.param_groups) + (("", 1.0, 1.0),)
  k = optim.accumulate_steps
  # `total_steps` and the schedule count train steps (micro-batches), as mmcv's iterations do with
  # gradient accumulation; the inner optimizer counts its updates, the n-th (0-based) of which
  # comes at micro-step n*k + k-1 and takes that step's learning rate.
  micro_step = (lambda count: count * k + (k - 1)) if k > 1 else (lambda count: count)
  transforms = {}
  for i, (_, lr_mult, decay_mult) in enumerate(groups):
    # Each group decays from its own base lr (lr * lr_mult) to the same absolute min_lr, as
    # mmcv's hook does for every param group (and DCFM's per-optimizer PolyScheduler): not
    # lr_mult times the base schedule, which would end at lr_mult * min_lr.
    group_schedule = schedule_from(optim.lr * lr_mult)
    transforms[i] = _optimizer(optim, lambda count, s=group_schedule: s(micro_step(count)),
                               optim.weight_decay * decay_mult)
  tx = optax.multi_transform(transforms, param_group_labels(params, groups[:-1]))
  if optim.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), tx)
  if k > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=k)
  return tx, schedule


def optimizer_for(optim: ConfigDict, params: Any
                  ) -> Callable[[jax.Array], optax.GradientTransformation]:
  """`make_optimizer`'s transformation as a function of the schedule's length, for
  `train.step.make_train_step`: a run resumed with more `train.steps` then runs the same compiled
  program (from JAX's persistent cache) instead of compiling the train step again (minutes for a
  large model). The state it makes and updates is the same for every length."""
  return lambda total_steps: make_optimizer(optim, total_steps, params)[0]


def check_counts(optim: ConfigDict) -> None:
  """Settings that trained without a word: `accumulate_steps` 0 as 1, a negative
  `grad_clip_norm` as no clipping, a negative `warmup_steps` as none."""
  if optim.accumulate_steps < 1:
    raise SetupError(f"optim.accumulate_steps={optim.accumulate_steps}: at least 1 (1: no "
                     "accumulation)")
  if optim.warmup_steps < 0:
    raise SetupError(f"optim.warmup_steps={optim.warmup_steps}: 0 (no warm-up) or more")
  if optim.grad_clip_norm < 0:
    raise SetupError(f"optim.grad_clip_norm={optim.grad_clip_norm}: 0 (no clipping) or a "
                     "positive norm")


def _optimizer(optim: ConfigDict, learning_rate: Callable[[jax.Array], jax.Array],
               weight_decay: float) -> optax.GradientTransformation:
  """`optim.name`: 'adamw' (PyTorch AdamW = optax's) or 'sgd' (PyTorch SGD with momentum: the
  L2 term wd * p is added to the gradient before the momentum buffer, lr applied after it)."""
  if optim.name == "adamw":
    return optax.adamw(learning_rate, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                       weight_decay=weight_decay)
  if optim.name == "sgd":
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.sgd(learning_rate, momentum=optim.momentum or None))
  raise SetupError(f"optim.name must be 'adamw' or 'sgd', got {optim.name!r}")
