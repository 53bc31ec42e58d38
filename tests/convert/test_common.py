"""vssjax.convert.common: `apply_rules` converts what its rules name and refuses, naming the keys,
a checkpoint or converter that leaves part of the model out."""
import jax
import numpy as np
import pytest

from vssjax.convert.common import CheckpointMismatchError, Rule, apply_rules, dense_rules

_EXPECTED = {"params/head/kernel": jax.ShapeDtypeStruct((3, 2), np.float32),
             "params/head/bias": jax.ShapeDtypeStruct((2,), np.float32)}
_STATE_DICT = {"head.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
               "head.bias": np.ones(2, np.float32)}


def test_apply_rules_converts_a_linear_layer():
  """The baseline the refusal below departs from: torch's (out, in) weight becomes the (in, out)
  kernel; were it not, every converted Dense would compute a transposed product."""
  out = apply_rules(_STATE_DICT, dense_rules("params/head", "head"), _EXPECTED)
  np.testing.assert_array_equal(out["params"]["head"]["kernel"], _STATE_DICT["head.weight"].T)
  np.testing.assert_array_equal(out["params"]["head"]["bias"], [1, 1])


def test_apply_rules_refuses_a_model_variable_no_rule_produces():
  """A converter that forgets a variable (here the bias) must fail naming it: otherwise the model
  would run with that variable at its random initial value and the converted checkpoint's
  numbers would silently be wrong."""
  rules = [Rule("params/head/kernel", ("head.weight",), np.transpose)]
  with pytest.raises(CheckpointMismatchError) as info:
    apply_rules({"head.weight": _STATE_DICT["head.weight"]}, rules, _EXPECTED)
  message = str(info.value)
  assert "(1 model variables no rule produces)" in message
  assert "model variables no rule produces (1):\n  params/head/bias" in message
  assert "params/head/kernel" not in message
