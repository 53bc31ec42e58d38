"""The train state: a plain pytree of arrays (no framework objects), so Orbax saves it as is."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: number of completed updates
  params: Any
  model_state: Any  # non-trained collections, e.g. {'batch_stats': ...}
  opt_state: Any

  @property
  def variables(self) -> dict[str, Any]:
    """The model's variables as its `apply` takes them: `params` and the other collections."""
    return {"params": self.params, **self.model_state}
