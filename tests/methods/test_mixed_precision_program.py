"""The bf16 programs' matmuls run in bf16: no float32 x float32 matmul of activation size.

Read off the lowered StableHLO (platform independent, nothing compiled), so that a parameter not
cast, or a float32 cotangent promoting a bf16 operand in the backward (JAX's transpose of a dot
with `preferred_element_type=float32`, ops/mixed_precision.py), shows as float32 FLOPs here.
"""
import math
import re

import jax
import pytest

from tests.conftest import load_config
from vssjax.methods import get_method
from vssjax.train.loop import batch_spec

_TYPE = re.compile(r"tensor<(?:([0-9x]+)x)?([a-z]+[0-9]*)>")


def _matmuls(stablehlo: str):
  """(lhs shape, lhs dtype, rhs shape, rhs dtype, GFLOPs) of every `dot_general` that is a matrix
  product (each operand has a free dimension; XLA turns vector-vector dots into reductions)."""
  for line in stablehlo.splitlines():
    if "stablehlo.dot_general" not in line:
      continue
    (lhs, lhs_dtype), (rhs, rhs_dtype), (out, _) = [
        ([int(d) for d in dims.split("x")] if dims else [], dtype)
        for dims, dtype in _TYPE.findall(line.rsplit(" : ", 1)[1])]
    dims = lambda name: [[int(d) for d in side.split(",") if d.strip()] for side in
                         re.search(name + r" = \[([0-9, ]*)\] x \[([0-9, ]*)\]", line).groups()]
    contract = dims("contracting_dims")
    batch = dims("batching_dims") if "batching_dims" in line else [[], []]
    if (len(contract[0]) + len(batch[0]) == len(lhs)
        or len(contract[1]) + len(batch[1]) == len(rhs)):
      continue
    yield lhs, lhs_dtype, rhs, rhs_dtype, 2 * math.prod(out) * math.prod(
        lhs[d] for d in contract[0]) / 1e9


def _train_gradient(path: str) -> tuple[str, int]:
  """The bf16 train gradient's StableHLO and the element count of the largest parameter."""
  config = load_config(path)
  config.model.update(dtype="bfloat16", dwconv_impl="grouped")
  method = get_method(config)
  spec = batch_spec(config)
  batch = {key: jax.ShapeDtypeStruct(s.shape, s.dtype) for key, s in spec.items()}
  rng = jax.random.PRNGKey(0)
  variables = dict(jax.eval_shape(method.init, rng, batch))
  params = variables.pop("params")
  grad = jax.grad(method.loss_and_metrics, has_aux=True)
  return (jax.jit(grad).lower(params, variables, batch, rng).as_text(),
          max(x.size for x in jax.tree.leaves(params)))


@pytest.mark.parametrize("path", ["configs/segformer/synthetic_mitb0.py",
                                  "configs/dcfm/synthetic_mitb0.py",
                                  "configs/dtern/synthetic_mitb0.py",
                                  "configs/sdcpc/synthetic_mitb0.py"])
def test_bfloat16_train_gradient_has_no_float32_activation_matmul(path):
  """float32 matrix products are left only on parameter-sized operands (the folded SegFormer
  head's weight products): none takes an activation or its gradient."""
  stablehlo, largest_param = _train_gradient(path)
  matmuls = list(_matmuls(stablehlo))
  assert sum(gflops for *_, gflops in matmuls) > 1  # the parser found the network's products
  float32 = [(lhs, lhs_dtype, rhs, rhs_dtype) for lhs, lhs_dtype, rhs, rhs_dtype, _ in matmuls
             if "f32" in (lhs_dtype, rhs_dtype)
             and max(math.prod(lhs), math.prod(rhs)) > largest_param]
  assert not float32
