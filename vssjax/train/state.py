"""The train state: a plain pytree of arrays (no framework objects), so Orbax saves it as is."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
  # int32 scalar: the train steps done, a micro-batch each; with optim.accumulate_steps=k the
  # optimizer has updated the parameters step // k times.
  step: jax.Array
  params: Any
  model_state: Any  # non-trained collections, e.g. {'batch_stats': ...}
  opt_state: Any

  @property
  def variables(self) -> dict[str, Any]:
    """The model's variables as its `apply` takes them: `params` and the other collections."""
    return {"params": self.params, **self.model_state}
