"""The ConvLSTM cell of ETC's multi-frame distillation (specs/etc.md §4.3 (d)), NHWC.

One cell, shared over the time steps: a single 3x3 conv (padding 1, with bias), parameter path
`Gates` as in the release's `ConvLSTM.Gates`, maps concat(input, h) to 4 x hidden channels, split
in the order (input gate, forget gate, output gate, cell candidate); sigmoid for the gates, tanh
for the candidate; c' = f * c + i * g, h' = o * tanh(c'); zero initial state. Weight and bias
start from PyTorch's default `Conv2d` init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), which matters
when the cell stays at its random init.

How the release trains the cell is not published (specs/etc.md §4.3 (d), §9); the choice is
`TRAINING_RULES`, applied by `student_view` and `training_objective`:

* 'frozen': the cell keeps its random init; the distillation loss never updates it. Keep its
  parameters out of the optimiser (or masked): weight decay alone would otherwise shrink them.
* 'adversarial': the student minimises the distillation loss through a frozen view of the cell,
  while the cell minimises mean(1 - h_T), h_T its final hidden state on the teacher sequence (the
  extra output of the release's `CriterionLSTMGAN`), so it cannot collapse to a constant that
  would make any student match.
* 'joint': the cell minimises the distillation loss together with the student (it can collapse).

With the stop-gradients in `student_view`, one gradient of (distillation + objective) w.r.t.
(student params, cell params) gives each side its own update, so the rule needs no second step.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
from flax.typing import Dtype
import jax
import jax.numpy as jnp

from vssjax.models.layers import Conv, torch_default_init

State = tuple[jax.Array, jax.Array]  # (hidden, cell), each [B, H, W, hidden_size]

TRAINING_RULES = ("frozen", "adversarial", "joint")


class ConvLSTM(nn.Module):
  """`__call__(x [B,H,W,C], state=None) -> (h, c)`: one step; `unroll(sequence) -> (h, c)`."""
  hidden_size: int = 4
  kernel_size: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, state: State | None = None) -> State:
    if state is None:
      zeros = jnp.zeros(x.shape[:-1] + (self.hidden_size,), self.dtype)
      state = (zeros, zeros)
    hidden, cell = state
    stacked = jnp.concatenate([x.astype(self.dtype), hidden], axis=-1)
    fan_in = stacked.shape[-1] * self.kernel_size**2
    pad = self.kernel_size // 2
    gates = Conv(4 * self.hidden_size, (self.kernel_size,) * 2, padding=((pad, pad),) * 2,
                 **torch_default_init(fan_in), dtype=self.dtype, name="Gates")(stacked)
    in_gate, forget_gate, out_gate, candidate = jnp.split(gates, 4, axis=-1)
    cell = nn.sigmoid(forget_gate) * cell + nn.sigmoid(in_gate) * jnp.tanh(candidate)
    return nn.sigmoid(out_gate) * jnp.tanh(cell), cell

  def unroll(self, sequence: Sequence[jax.Array]) -> State:
    """The final (h, c) after feeding the frames of `sequence` in order from the zero state."""
    state = None
    for x in sequence:
      state = self(x, state)
    return state


def check_rule(rule: str) -> None:
  if rule not in TRAINING_RULES:
    raise ValueError(f"unknown ConvLSTM training rule {rule!r}; expected one of {TRAINING_RULES}")


def student_view(params: Any, rule: str) -> Any:
  """The cell parameters the student's distillation loss sees: frozen unless `rule='joint'`."""
  check_rule(rule)
  return params if rule == "joint" else jax.lax.stop_gradient(params)


def training_objective(lstm: ConvLSTM, params: Any, teacher_sequence: Sequence[jax.Array],
                       rule: str) -> jax.Array:
  """The cell's own loss: mean(1 - h_T) on the (stop-gradient) teacher sequence under
  'adversarial', 0 otherwise."""
  check_rule(rule)
  if rule != "adversarial":
    return jnp.zeros((), jnp.float32)
  teacher_sequence = [jax.lax.stop_gradient(x) for x in teacher_sequence]
  hidden, _ = lstm.apply({"params": params}, teacher_sequence, method=ConvLSTM.unroll)
  return jnp.mean(1.0 - hidden.astype(jnp.float32))
