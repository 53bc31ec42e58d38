"""Variables of given shapes filled on the host, for benchmarks and tests.

Compiling a method's `init` program costs seconds to tens of seconds of XLA (hundreds of
per-parameter RNG kernels: 13-23 s on the 2-core CPU for the synthetic configs) and as much as the
forward pass in small tests; where the values only need to be sensible (timings, shape and
equivalence checks), numpy fills the `jax.eval_shape` of `init` instead.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def host_filled(shapes: Any, seed: int = 0, std: float = 0.1) -> Any:
  """The tree of `jax.ShapeDtypeStruct`s `shapes` as numpy arrays: unit scales and variances,
  zero biases and means (by leaf name, as Flax names them), normal(0, `std`) for the rest."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name in ("scale", "var"):
      return np.ones(leaf.shape, leaf.dtype)
    if name in ("bias", "mean"):
      return np.zeros(leaf.shape, leaf.dtype)
    return rng.normal(0.0, std, leaf.shape).astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)
