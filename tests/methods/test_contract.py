"""What the framework requires of a method's outputs: each slip a one-line `SetupError` naming
the method (or predictor) and the rule, and the built-in shapes accepted."""

import jax.numpy as jnp
import numpy as np
import pytest

from vssjax.errors import SetupError
from vssjax.methods import contract


class Mine:
  """A method as the errors name it."""


def test_init_returns_a_dict_of_collections_with_params():
  contract.check_init_variables(Mine(), {"params": {"w": 1}, "batch_stats": {}})
  with pytest.raises(SetupError, match=r"^Mine.init returned a dict of \['w'\]: it returns the "
                     r"module's variables as a dict of collections, \{'params'"):
    contract.check_init_variables(Mine(), {"w": jnp.ones(3)})
  with pytest.raises(SetupError, match=r"^Mine.init returned array of shape \(3,\)"):
    contract.check_init_variables(Mine(), jnp.ones(3))


_STATE = {"batch_stats": {"mean": jnp.zeros(4)}}
_LOSS = jnp.float32(1.0)


@pytest.mark.parametrize("outputs, message", [
    ((_LOSS, {"loss": _LOSS}), r" returned \(array, dict\): it returns \(loss, \(metrics, "
     r"new_model_state\)\)"),
    (_LOSS, r" returned array: it returns \(loss, \(metrics"),
    # A third item beside the metrics and state was a ValueError from the unpacking.
    ((_LOSS, ({"loss": _LOSS}, _STATE, {})), r" returned \(array, \(dict, dict, dict\)\): it "
     r"returns \(loss, \(metrics"),
    # A per-example loss (the likeliest slip) is refused as a per-pixel one is.
    ((jnp.ones(4), ({"loss": _LOSS}, _STATE)), r": the loss has shape \(4,\), and must be one "
     "number"),
    ((jnp.ones((2, 8, 8)), ({"loss": _LOSS}, _STATE)), r": the loss has shape \(2, 8, 8\), and "
     "must be one number"),
    ((_LOSS, ({"ce": _LOSS}, _STATE)), r": its metrics must be a dict that holds 'loss' \(the "
     r"log's loss\), in \(loss, \(metrics, new_model_state\)\); got keys \['ce'\]$"),
    ((_LOSS, ({"loss": _LOSS, "freq": jnp.ones(9)}, _STATE)), r": metrics \{'freq': \(9,\)\} are "
     "not scalars"),
    # A nested dict's np.shape is (): it passed, and the first log line failed on it.
    ((_LOSS, ({"loss": _LOSS, "parts": {"ce": _LOSS}}, _STATE)), r": metrics \{'parts': 'dict'\} "
     r"are not scalars: the loop logs one number per metric \(name the parts of a nested one "
     r"'parts/ce', \.\.\.\)"),
    ((_LOSS, ({"loss": _LOSS, "pair": [_LOSS, _LOSS]}, _STATE)), r": metrics \{'pair': "
     r"'\[array, array\]'\} are not scalars"),
    ((_LOSS, ({"loss": _LOSS}, {})), r": its new model state \(\[\]\) is not shaped as the "
     r"model_state it was given \(\['batch_stats'\], what init returned besides 'params'\)"),
    ((_LOSS, ({"loss": _LOSS}, {"batch_stats": {}})), r": its new model state \(\['batch_stats'\] "
     "with other variables\\) is not shaped"),
])
def test_loss_and_metrics_slips_name_the_method_and_the_rule(outputs, message):
  with pytest.raises(SetupError, match=r"^Mine.loss_and_metrics" + message):
    contract.check_training_outputs(Mine(), outputs, _STATE)


def test_loss_and_metrics_as_the_built_in_methods_return_it():
  contract.check_training_outputs(
      Mine(), (_LOSS, ({"loss": _LOSS, "acc": np.float32(0.5)}, {"batch_stats": {"mean": 1}})),
      _STATE)


@pytest.mark.parametrize("answers, message", [
    (np.zeros((4, 4), np.int32), r"returned array of shape \(4, 4\): they return a list of "
     r"\(frame index, label map\) pairs"),
    ((0, np.zeros((4, 4), np.int32)), r"returned \(int, array of shape \(4, 4\)\)"),
    ([np.zeros((4, 4), np.int32)], r"answered array of shape \(4, 4\) in its list"),
    ([(jnp.int32(0), np.zeros((4, 4)))], r"answered \(array, array of shape \(4, 4\)\)"),
])
def test_a_predictor_answers_a_list_of_index_and_label_map_pairs(answers, message):
  with pytest.raises(SetupError, match=r"^MyPredictor.push/flush " + message):
    contract.check_answers("MyPredictor", answers)
  contract.check_answers("MyPredictor", [])
  contract.check_answers("MyPredictor", [(np.int64(3), jnp.zeros((4, 4), jnp.int32))])


@pytest.mark.parametrize("labels, message", [
    (np.zeros((2, 3), np.int32), r"has shape \(2, 3\), the frame \(4, 6\): a map is \[H, W\] at "
     "the size of the frame pushed"),
    (np.zeros((1, 4, 6), np.int32), r"has shape \(1, 4, 6\)"),
    (np.zeros((4, 6), np.float32), "has dtype float32: class ids are integers"),
    (np.full((4, 6), 9, np.uint8), r"holds class ids from 9 to 9, outside \[0, 9\) "
     r"\(data.num_classes\)"),
    # A negative id (a predictor's own "ignore" value) would index the confusion matrix from its
    # end: a wrong score, not an error.
    (np.full((4, 6), -1, np.int32), r"holds class ids from -1 to -1, outside \[0, 9\)"),
])
def test_a_label_map_is_class_ids_at_the_frames_size(labels, message):
  with pytest.raises(SetupError, match=r"^MyPredictor's label map of frame 7 " + message):
    contract.check_label_map("MyPredictor", 7, labels, (4, 6), num_classes=9)
  contract.check_label_map("MyPredictor", 7, np.full((4, 6), 8, np.uint8), (4, 6), num_classes=9)
