"""The bf16 programs' matmuls run in bf16: no float32 x float32 matmul of activation size, and
every attention's scores are a float32 result (docs/deviations.md, "bf16 is an option").

Read off the lowered StableHLO (platform independent, nothing compiled), so that a parameter not
cast, or a float32 cotangent promoting a bf16 operand in the backward (JAX's transpose of a dot
with `preferred_element_type=float32`, ops/mixed_precision.py), shows as float32 FLOPs here, and
scores rounded to bf16 before the float32 softmax show as a bf16 product feeding it.
"""
import math
import re

import jax
import jax.numpy as jnp
import pytest

from tests.conftest import load_config
from vssjax.methods import get_method, sdcpc
from vssjax.train.loop import batch_spec

_TYPE = re.compile(r"tensor<(?:([0-9x]+)x)?([a-z]+[0-9]*)>")
_DEFINITION = re.compile(r"^\s*(%[\w#:]+) = \"?([\w.]+)")
_VALUE = re.compile(r"%\w+")
# What may lie between an attention's score product and its softmax: casts, the scale, masks
# (`jnp.where` is a call), layout.
_SCORE_PATH = {"stablehlo.convert", "stablehlo.multiply", "stablehlo.divide", "stablehlo.select",
               "stablehlo.reshape", "stablehlo.transpose", "stablehlo.broadcast_in_dim", "call"}
_LAYOUT = {"stablehlo.convert", "stablehlo.reshape", "stablehlo.transpose", "stablehlo.slice",
           "stablehlo.broadcast_in_dim"}


def _definitions(stablehlo: str) -> dict[str, tuple[str, list[str], str]]:
  """value -> (op, operand values, line) of every definition (a call's op is "call")."""
  definitions = {}
  for line in stablehlo.splitlines():
    match = _DEFINITION.match(line)
    if match:
      op = "call" if match.group(2) == "call" else match.group(2)
      operands = _VALUE.findall(line.split("=", 1)[1].split(" : ", 1)[0])
      definitions[match.group(1).split(":")[0]] = (op, operands, line)
  return definitions


def _is_constant(value: str, definitions) -> bool:
  """Whether `value` is a constant, through casts and layout (a pooling or resize matrix)."""
  if value not in definitions:
    return False
  op, operands, _ = definitions[value]
  return op in ("stablehlo.constant", "stablehlo.iota") or (
      op in _LAYOUT and all(_is_constant(o, definitions) for o in operands))


def _matmuls(stablehlo: str):
  """(lhs shape, lhs dtype, rhs shape, rhs dtype, GFLOPs) of every `dot_general` that is a matrix
  product of two variables: each operand has a free dimension, and a dimension is contracted (XLA
  turns vector-vector dots into reductions, and contraction-free ones, as the gradient of SD-CPC's
  per-pixel float32 cosine has, into broadcast multiplies); a product with a constant matrix, a
  fixed linear map of an activation (adaptive pooling's averages, in float32 as torch's kernel
  accumulates a bf16 map; memory-bound: a few output rows), is not one."""
  definitions = _definitions(stablehlo)
  for line in stablehlo.splitlines():
    if "stablehlo.dot_general" not in line:
      continue
    operands = _VALUE.findall(line.split("=", 1)[1].split(" : ", 1)[0])
    if any(_is_constant(o, definitions) for o in operands):
      continue
    (lhs, lhs_dtype), (rhs, rhs_dtype), (out, _) = [
        ([int(d) for d in dims.split("x")] if dims else [], dtype)
        for dims, dtype in _TYPE.findall(line.rsplit(" : ", 1)[1])]
    dims = lambda name: [[int(d) for d in side.split(",") if d.strip()] for side in
                         re.search(name + r" = \[([0-9, ]*)\] x \[([0-9, ]*)\]", line).groups()]
    contract = dims("contracting_dims")
    batch = dims("batching_dims") if "batching_dims" in line else [[], []]
    if (not contract[0] or len(contract[0]) + len(batch[0]) == len(lhs)
        or len(contract[1]) + len(batch[1]) == len(rhs)):
      continue
    yield lhs, lhs_dtype, rhs, rhs_dtype, 2 * math.prod(out) * math.prod(
        lhs[d] for d in contract[0]) / 1e9


def _score_products(stablehlo: str):
  """The result types of the matrix products whose values reach a softmax (a max-reduction)
  through `_SCORE_PATH` alone and neither of whose operands is a parameter or a constant (through
  casts and layout): attention scores. A layer's logits (a product with a weight) are not."""
  definitions = _definitions(stablehlo)

  def fixed(value):  # a function argument (parameter) or a constant, cast or laid out
    if value not in definitions:
      return value.startswith("%arg")
    op, operands, _ = definitions[value]
    return op in ("stablehlo.constant", "stablehlo.iota") or (
        op in _LAYOUT and all(fixed(o) for o in operands))

  for op, operands, line in definitions.values():
    if op != "stablehlo.reduce" or "applies stablehlo.maximum" not in line:
      continue
    pending, seen = [operands[0]], set()
    while pending:
      value = pending.pop()
      if value in seen or value not in definitions:
        continue
      seen.add(value)
      value_op, value_operands, value_line = definitions[value]
      if value_op == "stablehlo.dot_general":
        if not any(fixed(o) for o in value_operands):
          yield value_line.rsplit(" : ", 1)[1]
      elif value_op in _SCORE_PATH:
        pending.extend(value_operands)


# Crops at which the synthetic configs' smallest activations (stage 4's, 8 x 8 x 128 per frame)
# outnumber their largest parameter (stage 4's patch embedding, 3 x 3 x 80 x 128): at the configs'
# own 96 x 96, a float32 product of a stage-3 or stage-4 layer passed as parameter-sized. Lowered
# only, so the size costs nothing.
_CROP = 256


def _bfloat16_method(path: str):
  """The method of config `path` in bf16, and abstract (params, state, batch, rng) to lower."""
  config = load_config(path)
  config.model.dtype = "bfloat16"
  if not path.startswith("configs/etc/"):  # MiT's depth-wise convs (ETC's PSPNet has none)
    config.model.dwconv_impl = "grouped"
  config.data.train_transform.crop_size = (_CROP, _CROP)
  method = get_method(config)
  spec = batch_spec(config)
  batch = {key: jax.ShapeDtypeStruct(s.shape, s.dtype) for key, s in spec.items()}
  rng = jax.random.PRNGKey(0)
  variables = dict(jax.eval_shape(method.init, rng, batch))
  params = variables.pop("params")
  return method, (params, variables, batch, rng)


def _train_gradient(path: str) -> tuple[str, int]:
  """The bf16 train gradient's StableHLO and the element count of the largest parameter."""
  method, args = _bfloat16_method(path)
  grad = jax.grad(method.loss_and_metrics, has_aux=True)
  return (jax.jit(grad).lower(*args).as_text(), max(x.size for x in jax.tree.leaves(args[0])))


@pytest.mark.parametrize("path", ["configs/segformer/synthetic_mitb0.py",
                                  "configs/dcfm/synthetic_mitb0.py",
                                  "configs/dtern/synthetic_mitb0.py",
                                  "configs/sdcpc/synthetic_mitb0.py"])
def test_bfloat16_train_gradient_has_no_float32_activation_matmul(path, monkeypatch):
  """float32 matrix products are left only on parameter-sized operands (the folded SegFormer
  head's weight products): none takes an activation or its gradient. SD-CPC's MCP-CL loss
  computes in float32 by design, as the cross-entropy's logits do (its pixel-prototype
  similarities and k-means centres, `sdcpc_prototypes.py`: a few MFLOPs); it is replaced here by
  a sum of the embedding, whose layers stay checked."""
  monkeypatch.setattr(sdcpc, "mcp_cl_loss", lambda embedding, *args, **kwargs: {
      "loss_contrast": jnp.sum(embedding.astype(jnp.float32)) * 1e-9})
  stablehlo, largest_param = _train_gradient(path)
  config = load_config(path)
  frames = math.prod(batch_spec(config)["frames"].shape[:2])
  stage4 = (_CROP // 32) ** 2 * config.model.backbone_overrides.embed_dims[-1]
  assert frames * stage4 > largest_param  # any activation's float32 product would show
  matmuls = list(_matmuls(stablehlo))
  assert sum(gflops for *_, gflops in matmuls) > 1  # the parser found the network's products
  float32 = [(lhs, lhs_dtype, rhs, rhs_dtype) for lhs, lhs_dtype, rhs, rhs_dtype, _ in matmuls
             if "f32" in (lhs_dtype, rhs_dtype)
             and max(math.prod(lhs), math.prod(rhs)) > largest_param]
  assert not float32


_SUM = re.compile(r"stablehlo\.reduce\(.*applies stablehlo\.add .*: \((tensor<[^>]*>), "
                  r"tensor<[a-z0-9]+>\) -> (tensor<[^>]*>)")


def _bfloat16_sums(stablehlo: str, most_terms: int) -> list[str]:
  """The add-reductions with a bf16 result that sum more than `most_terms` terms into each output
  element (a bias's gradient sums one per pixel)."""
  sums = []
  for line in stablehlo.splitlines():
    match = _SUM.search(line)
    if not match:
      continue
    (operand, _), (result, dtype) = [_TYPE.match(t).groups() for t in match.groups()]
    size = lambda dims: math.prod(int(d) for d in dims.split("x")) if dims else 1
    if dtype == "bf16" and size(operand) > most_terms * size(result):
      sums.append(line.strip())
  return sums


@pytest.mark.parametrize("path", ["configs/segformer/synthetic_mitb0.py",
                                  "configs/dcfm/synthetic_mitb0.py",
                                  "configs/dtern/synthetic_mitb0.py",
                                  "configs/sdcpc/synthetic_mitb0.py",
                                  "configs/etc/synthetic_psp18.py"])
def test_bfloat16_train_gradient_sums_in_float32(path):
  """No gradient is a bf16 sum of more than one term: not a bias's over the pixels
  (`ops.mixed_precision.add_bias`: JAX's own is one, far off at these sizes), nor SD-CPC's gate's
  over the channels, nor the transposes of the heads' broadcasts (`broadcast_add`): DTERN's
  descriptors over a feature map's height or width (32 at this crop; JAX's sums were bf16),
  SD-CPC's token embedding over the batch's frames (16)."""
  stablehlo, _ = _train_gradient(path)
  assert "applies stablehlo.add" in stablehlo
  assert not _bfloat16_sums(stablehlo, most_terms=1)


@pytest.mark.parametrize("path,attentions", [
    ("configs/segformer/synthetic_mitb0.py", 8),  # MiT-B0: 8 blocks
    ("configs/dtern/synthetic_mitb0.py", 8 + 4),  # + 2 LTEM layers, GTEM's class and non-local
    ("configs/sdcpc/synthetic_mitb0.py", 8 + 3)])  # + SSEA, DSSA's coarse and window stages
def test_bfloat16_attention_scores_are_float32_results(path, attentions):
  """Every attention's scores leave their bf16 x bf16 product as float32 (not rounded to bf16
  and then cast for the softmax). The loss program's forward; MiT's blocks appear once per call
  of the backbone, hence 'at least'."""
  method, args = _bfloat16_method(path)
  loss = lambda *a: method.loss_and_metrics(*a)[0]
  scores = list(_score_products(jax.jit(loss).lower(*args).as_text()))
  assert len(scores) >= attentions
  assert not [s for s in scores if not s.endswith("f32>")]
