"""DTERN method: every parameter learns except the documented unused ones, the loss rules, and the
streaming predictor (cached features) equals the release's clip-by-clip forward."""
import re

import jax
import numpy as np
import pytest
from flax import traverse_util

from tests.conftest import (assert_kept_states_predict_the_clip, load_config, random_clip_batch,
                            record_parts)
from vssjax.errors import SetupError
from vssjax.methods import get_method, losses
from vssjax.train.host_init import host_filled

# Saved by the release but never used in its forward pass (specs/dtern.md §4.2, §10.2).
UNUSED = {
    "decode_head/conv_seg/kernel", "decode_head/conv_seg/bias",
    *[f"decode_head/dtern/cluster_blocks_{i}/clustering/norm1/{leaf}"
      for i in (0, 1) for leaf in ("scale", "bias")],
    *[f"decode_head/dtern/cluster_blocks_0/{name}" for name in (
        "prompt1", "prompt2", "top_down_transform1", "top_down_transform2")],
}
_SHAPE = (2, 4, 64, 64)  # 64 px: every MiT stage still has > 1 reduced key, so `q` matters


def _method(**method_overrides):
  config = load_config("configs/dtern/synthetic_mitb0.py", "quick")
  config.method.update(method_overrides)
  return get_method(config)


def _batch(seed=0):
  return random_clip_batch(_SHAPE, 10, seed)


@pytest.fixture(scope="module")
def method_and_variables():
  method = _method()
  # Host-filled, as SD-CPC's: every check here is structural or an equality between two paths, so
  # sensible values do; compiling `init` cost as much as the gradient program.
  return method, host_filled(jax.eval_shape(method.init, jax.random.key(0), _batch()))


@pytest.fixture(scope="module")
def streaming_variables(method_and_variables):
  """The variables of the equalities between kept frame states and the clip forward: weights of
  normal(0, 0.3), under which LTEM's layer 0 moves the tokens, so that each frame's layer-1
  centres differ from its layer-0 ones. At the fixture's 0.1 they agree to 2e-4 of their size, and
  a predictor that kept layer 0's centres for layer 1 moved the logits by 2e-5, inside the
  equalities' 1e-4."""
  method, _ = method_and_variables
  return method, host_filled(jax.eval_shape(method.init, jax.random.key(0), _batch()), std=0.3)


@pytest.fixture(scope="module")
def grad_fn(method_and_variables):
  """The jitted gradient of the loss, with its metrics: one program for the tests that need
  either (compiling the loss alone as well cost as much again)."""
  return jax.jit(jax.grad(method_and_variables[0].loss_and_metrics, has_aux=True))


@pytest.fixture(scope="module")
def grads_and_metrics(method_and_variables, grad_fn):
  _, variables = method_and_variables
  grads, (metrics, _) = grad_fn(variables["params"], {"batch_stats": variables["batch_stats"]},
                                _batch(), jax.random.key(1))
  return traverse_util.flatten_dict(grads, sep="/"), metrics


def test_every_parameter_but_the_unused_gets_a_gradient(grads_and_metrics):
  grads, metrics = grads_and_metrics
  zero = {path for path, g in grads.items() if not np.any(np.asarray(g))}
  assert zero == UNUSED
  np.testing.assert_allclose(
      metrics["loss"], 0.5 * metrics["loss_frames"] + 0.5 * metrics["loss_target"], rtol=1e-6)


def test_only_the_target_frame_s_labels_enter_the_target_loss(method_and_variables, grad_fn):
  """The final and class-token predictions are the last frame's: relabelling the reference frames
  moves the frame loss only, relabelling the target frame moves the target loss."""
  _, variables = method_and_variables
  state = {"batch_stats": variables["batch_stats"]}
  batch = _batch()

  def metrics_with(labels):
    return grad_fn(variables["params"], state, dict(batch, labels=labels), jax.random.key(1))[1][0]

  metrics = metrics_with(batch["labels"])
  references = metrics_with(batch["labels"].at[:, :-1].set(0))
  np.testing.assert_array_equal(references["loss_target"], metrics["loss_target"])
  assert references["loss_frames"] != metrics["loss_frames"]
  target = metrics_with(batch["labels"].at[:, -1].set(0))
  assert target["loss_target"] != metrics["loss_target"]


def test_loss_average_and_target_only_frame_loss(method_and_variables, grads_and_metrics):
  _, variables = method_and_variables
  _, valid_metrics = grads_and_metrics
  method = _method(loss_average="all", frame_loss_target_only=True)
  loss = jax.jit(method.loss_and_metrics)
  state = {"batch_stats": variables["batch_stats"]}
  batch = _batch()
  _, (metrics, _) = loss(variables["params"], state, batch, jax.random.key(1))
  # 'all' divides by every pixel: the 'valid' mean times the valid fraction (20 of 64 rows ignored).
  np.testing.assert_allclose(metrics["loss_target"], valid_metrics["loss_target"] * 44 / 64,
                             rtol=1e-5)
  # Cityscapes rule: only the target frame's labels enter the SegFormer-branch loss.
  relabelled = dict(batch, labels=batch["labels"].at[:, :-1].set(0))
  _, (same, _) = loss(variables["params"], state, relabelled, jax.random.key(1))
  np.testing.assert_array_equal(same["loss_frames"], metrics["loss_frames"])


def test_the_logged_pixel_accuracy_scores_the_final_prediction(method_and_variables,
                                                              grads_and_metrics):
  """The logged pixel_acc is the accuracy of the final (memory-read) prediction on the target
  frame's labels, upsampled to their size, not of GTEM's class-token logits that the target loss
  also scores: otherwise a run's accuracy curve would follow the auxiliary branch."""
  method, variables = method_and_variables
  _, metrics = grads_and_metrics
  batch = _batch()
  forward = jax.jit(lambda v, frames: method._apply(  # pylint: disable=protected-access
      v, frames, train=True, rngs={"dropout": jax.random.key(1)}, mutable=["batch_stats"])[0])
  outputs = forward(variables, batch["frames"])
  labels = batch["labels"][:, -1]
  final, class_token = (
      float(losses.cross_entropy_at_label_size(outputs[key], labels)[1])
      for key in ("final", "class_logits"))
  assert abs(final - class_token) > 1e-3  # the two predictions score apart on this batch
  assert float(metrics["pixel_acc"]) == pytest.approx(final, abs=1e-6)


def test_the_target_loss_is_the_releases_one_cross_entropy_over_both_predictions(
    method_and_variables, grads_and_metrics):
  """The release scores [final; class-token logits] against the target's labels twice in one
  cross-entropy; its two halves, taken apart, have the same divisor, so their mean, not sum."""
  method, variables = method_and_variables
  _, metrics = grads_and_metrics
  batch = _batch()
  outputs = jax.jit(lambda v, frames: method._apply(  # pylint: disable=protected-access
      v, frames, train=True, rngs={"dropout": jax.random.key(1)}, mutable=["batch_stats"])[0])(
          variables, batch["frames"])
  labels = batch["labels"][:, -1]
  both = np.concatenate([outputs["final"], outputs["class_logits"]], axis=0)
  expected, _ = losses.cross_entropy_at_label_size(
      both, np.concatenate([labels] * 2), average=method.config.method.loss_average)
  np.testing.assert_allclose(metrics["loss_target"], expected, rtol=1e-5)


def test_kept_frame_states_predict_what_the_clip_forward_does(streaming_variables):
  """In eval mode the head's fusion of each frame is per frame, so the predictor computes it once
  per frame and runs LTEM/GTEM on the kept results: the same logits as the whole clip."""
  assert_kept_states_predict_the_clip(*streaming_variables)


def test_the_references_layer_1_centres_move_the_logits_beyond_the_equalities_tolerance(
    streaming_variables):
  """The equalities above can tell each kept state's two centres apart: the references' layer-1
  centres replaced by their layer-0 ones move the logits by far more than 1e-4."""
  method, variables = streaming_variables
  frames = np.random.default_rng(5).integers(0, 256, (1, 4, 64, 64, 3), dtype=np.uint8)
  states = [method.encode_frame(variables, frames[:, i]) for i in range(4)]
  references = [reference for _, reference in states]
  swapped = [dict(reference, centers_1=reference["centers_0"]) for reference in references[:-1]]
  logits = method.decode_states(variables, states[-1][0], references)
  moved = method.decode_states(variables, states[-1][0], swapped + references[-1:])
  assert np.abs(np.asarray(moved) - np.asarray(logits)).max() > 1e-2


def test_inputs_with_an_odd_quarter_grid_predict_on_c2_s_grid(streaming_variables):
  """67x93 frames: a 17x24 grid at 1/4 and c2's 9x12 at 1/8, where the release's (h4 // 2,
  w4 // 2) resize of the SegFormer feature gives 8 rows; both the clip forward and the kept
  frame states run and agree (docs/deviations.md, DTERN)."""
  assert_kept_states_predict_the_clip(*streaming_variables, size=(67, 93))


def test_cached_streaming_equals_clip_recomputation(method_and_variables, monkeypatch):
  """Frames 0-2 single-frame, 3-8 the first-frames table, 9+ [t-9, t-6, t-3, t]; and nothing of a
  video stays with the method for the next."""
  method, variables = method_and_variables
  passed = record_parts(monkeypatch, method.decode_states)  # what the predictor passes it
  video = np.random.default_rng(3).integers(0, 256, (11, 48, 80, 3), dtype=np.uint8)
  cached = method.predictor(variables)
  recomputed = method.predictor(variables, cache_features=False)
  predicted = []
  for t, frame in enumerate(video):
    [(index, labels)] = cached.push(frame)
    [(index_r, labels_r)] = recomputed.push(frame)
    assert index == index_r == t and labels.shape == (48, 80)
    np.testing.assert_array_equal(labels, labels_r, err_msg=f"frame {t}")
    predicted.append(labels)
  assert sorted(cached._memory) == list(range(2, 11))  # pylint: disable=protected-access
  assert cached.flush() == []
  # decode_states was passed the head's temporal layers only (variables_read.py), not the backbone
  assert len(passed) == 8  # frames 3-10
  for read in passed:
    assert 0 < len(jax.tree.leaves(read)) < len(jax.tree.leaves(variables)) / 2
    assert "backbone" not in read["params"]
  other = method.predictor(variables)
  for frame in video[::-1][:5]:
    other.push(frame)
  again = method.predictor(variables)
  for t, frame in enumerate(video):
    np.testing.assert_array_equal(again.push(frame)[0][1], predicted[t], err_msg=f"frame {t}")


def test_frame_sizes_that_resize_alike_share_the_decode_program(method_and_variables, monkeypatch):
  """A video of 128x128 frames after one of 64x64 (both a 64x64 network input, the quick eval
  scale) traces no new backbone or head program: only the labels' resize to the frame size."""
  _, variables = method_and_variables
  method = _method()  # its own jitted programs, none traced yet
  traced = []
  module = method.module

  class CountingModule:  # the jitted programs call `method.module.apply` only while tracing
    def apply(self, *args, **kwargs):
      traced.append(kwargs.get("method"))
      return module.apply(*args, **kwargs)

  monkeypatch.setattr(method, "module", CountingModule())
  rng = np.random.default_rng(4)
  for hw in [(64, 64), (128, 128)]:
    predictor = method.predictor(variables)
    for t in range(10):  # frames 0-2, 3-8 and 9: every clip composition the predictor decodes
      [(index, labels)] = predictor.push(rng.integers(0, 256, hw + (3,), dtype=np.uint8))
      assert index == t and labels.shape == hw
    if hw == (64, 64):
      traced_first_video = list(traced)
  assert traced_first_video and traced == traced_first_video


def test_the_window_a_minus_9_to_a_predicts_a_as_the_whole_video_does(method_and_variables):
  """DTERN's Cityscapes evaluation streams only [a-9, a] (`data.eval_label_window = (9, 0)`) and
  scores a: its clip [a-9, a-6, a-3, a] is whole in the window, so a's labels are those of the
  whole video streamed from frame 0 (a window one frame shorter would not give them)."""
  method, variables = method_and_variables
  video = np.random.default_rng(5).integers(0, 256, (12, 48, 80, 3), dtype=np.uint8)
  a = 11

  def last_prediction(frames):
    predictor = method.predictor(variables)
    return [predictor.push(frame) for frame in frames][-1]

  [(index, window_labels)] = last_prediction(video[a - 9:])
  [(_, whole_labels)] = last_prediction(video)
  [(_, short_labels)] = last_prediction(video[a - 8:])
  assert index == 9
  np.testing.assert_array_equal(window_labels, whole_labels)
  assert (short_labels != whole_labels).any()


@pytest.mark.parametrize("kernels", [(4, 3, 3, 3), (5, 0), ()])
def test_cam_kernels_without_a_centre_tap_are_refused_as_the_method_is_built(kernels):
  """CAM sums its depth-wise convs as one kernel centred on the pixel: each size must be odd."""
  config = load_config("configs/dtern/synthetic_mitb0.py", "quick")
  config.model.cam_kernels = kernels
  with pytest.raises(SetupError, match=rf"model.cam_kernels={re.escape(str(kernels))}: "):
    get_method(config)


def test_a_head_width_the_ltem_heads_cannot_split_is_refused_as_the_method_is_built():
  """LTEM's two layers have 2 and 4 attention heads: the width must be a multiple of 4."""
  config = load_config("configs/dtern/synthetic_mitb0.py", "quick")
  config.model.decoder_dim = 18
  with pytest.raises(SetupError, match=r"model.decoder_dim=18: .* \(2, 4\) attention heads, so "
                                       "a multiple of 4"):
    get_method(config)
