"""SD-CPC method: every parameter learns, the loss is the sum of its documented terms (reference
labels only in the frame loss), and the streaming predictor runs single-frame and clip paths.
(`frame_loss_target_only` and the predictor's caching are DTERN's code, tested in test_dtern.py.)"""
import jax
import numpy as np
import pytest
from flax import traverse_util

from tests.conftest import assert_kept_states_predict_the_clip, load_config, random_clip_batch
from vssjax import parallel
from vssjax.errors import SetupError
from vssjax.methods import get_method
from vssjax.train.host_init import host_filled

_SHAPE = (2, 4, 64, 64)  # 64 px: a 8x8 alignment grid, 4x4 after DSSA's coarse pooling


def _method():
  return get_method(load_config("configs/sdcpc/synthetic_mitb0.py", "quick"))


def _batch(seed=0):
  return random_clip_batch(_SHAPE, 9, seed)


@pytest.fixture(scope="module")
def method_and_variables():
  method = _method()
  return method, host_filled(jax.eval_shape(method.init, jax.random.key(0), _batch()))


def test_every_parameter_gets_a_gradient_and_the_loss_adds_up(method_and_variables):
  method, variables = method_and_variables
  fn = jax.jit(jax.grad(method.loss_and_metrics, has_aux=True))
  state = {"batch_stats": variables["batch_stats"]}
  batch = _batch()
  grads, (metrics, _) = fn(variables["params"], state, batch, jax.random.key(1))
  zero = [path for path, g in traverse_util.flatten_dict(grads, sep="/").items()
          if not np.any(np.asarray(g))]
  assert not zero
  mcp = method.config.method.mcp
  assert metrics["loss_contrast"] > 0
  np.testing.assert_allclose(
      metrics["loss"], metrics["loss_final"] + 0.4 * metrics["loss_frames"]
      + mcp.weight * metrics["loss_contrast"], rtol=1e-6)
  # The reference frames' labels enter the SegFormer-branch loss only.
  relabelled = dict(batch, labels=batch["labels"].at[:, :-1].set(0))
  _, (other, _) = fn(variables["params"], state, relabelled, jax.random.key(1))
  for name in ("loss_final", "loss_contrast"):
    np.testing.assert_array_equal(other[name], metrics[name])
  assert other["loss_frames"] != metrics["loss_frames"]


def test_the_separation_term_adds_to_the_loss_and_trains_the_embedding(method_and_variables):
  """`method.mcp.separation_weight` (with the prototypes' gradient it needs) adds its weighted
  term, logged as `loss_separation`, whose gradient reaches the embedding projector through the
  prototypes; with `grouping='confidence'` here."""
  _, variables = method_and_variables
  config = load_config("configs/sdcpc/synthetic_mitb0.py", "quick")
  config.method.mcp.update(prototype_gradient=True, separation_weight=0.5, grouping="confidence")
  method = get_method(config)
  state = {"batch_stats": variables["batch_stats"]}

  def separation(params):
    _, (metrics, _) = method.loss_and_metrics(params, state, _batch(), jax.random.key(1))
    return metrics["loss_separation"], metrics

  grads, metrics = jax.jit(jax.grad(separation, has_aux=True))(variables["params"])
  mcp = config.method.mcp
  np.testing.assert_allclose(
      metrics["loss"], metrics["loss_final"] + 0.4 * metrics["loss_frames"]
      + mcp.weight * metrics["loss_contrast"] + 0.5 * metrics["loss_separation"], rtol=1e-6)
  assert np.isfinite(metrics["loss_separation"])
  assert np.any(np.asarray(grads["decode_head"]["projector_fc2"]["kernel"]))


def test_dssa_s_alternatives_kept_states_predict_the_clip():
  """`model.dssa.difference='js'`: DSSA reads the frames' class posteriors, which the predictor
  keeps with each frame's static feature (tests/models/test_sdcpc_head.py checks them);
  `window_centre='coarse_argmax'` moves the fine windows by the kept states' coarse stage."""
  config = load_config("configs/sdcpc/synthetic_mitb0.py", "quick")
  config.model.dssa.update(difference="js", window_centre="coarse_argmax")
  method = get_method(config)
  assert_kept_states_predict_the_clip(
      method, host_filled(jax.eval_shape(method.init, jax.random.key(0), _batch())))


def test_streaming_predictor(method_and_variables):
  """Frames 0-2 single-frame, 3-8 DTERN's first-frames table, 9 [t-9, t-6, t-3, t]; each frame's
  state is kept (DTERN's predictor: its equality with clip recomputation is tested there)."""
  method, variables = method_and_variables
  video = np.random.default_rng(3).integers(0, 256, (10, 48, 80, 3), dtype=np.uint8)
  predictor = method.predictor(variables)
  for t, frame in enumerate(video):
    [(index, labels)] = predictor.push(frame)
    assert index == t and labels.shape == (48, 80) and labels.dtype == np.int32
    assert 0 <= labels.min() and labels.max() < 9
  assert sorted(predictor._memory) == list(range(1, 10))  # pylint: disable=protected-access
  assert predictor.flush() == []


def test_kept_frame_states_predict_what_the_clip_forward_does(method_and_variables):
  """SSEA aligns each frame on its own, so the predictor runs it once per frame and DSSA on the
  kept results: the same logits as the whole clip through the network."""
  assert_kept_states_predict_the_clip(*method_and_variables)


def test_prototypes_per_frame_take_the_reference_frames_pixels():
  """`method.mcp.grouping='frames'`: one prototype per clip frame, the references' from their
  own embeddings and SegFormer-branch predictions, so (with 'correct' pixels) the first
  reference's labels now change MCP-CL, which the default grouping never reads. Refused where the
  references have no labels to be correct by."""
  config = load_config("configs/sdcpc/synthetic_mitb0.py", "quick")
  config.method.mcp.grouping = "frames"
  method = get_method(config)
  variables = host_filled(jax.eval_shape(method.init, jax.random.key(0), _batch()))
  state = {"batch_stats": variables["batch_stats"]}
  fn = jax.jit(method.loss_and_metrics)
  batch = _batch()
  _, (metrics, _) = fn(variables["params"], state, batch, jax.random.key(1))
  relabelled = dict(batch, labels=batch["labels"].at[:, 0].set(0))
  _, (other, _) = fn(variables["params"], state, relabelled, jax.random.key(1))
  np.testing.assert_array_equal(other["loss_final"], metrics["loss_final"])
  assert np.isfinite(metrics["loss_contrast"])
  assert other["loss_contrast"] != metrics["loss_contrast"]
  config.method.frame_loss_target_only = True
  with pytest.raises(SetupError, match=r"grouping='frames' with prototype_pixels='correct' .* "
                                       r"use prototype_pixels='predicted'"):
    get_method(config)


@pytest.mark.parametrize("field, value, message", [
    ("prototype_pixels", "labelled", r"method.mcp.prototype_pixels must be one of"),
    ("prototypes_per_class", 0, r"method.mcp.prototypes_per_class=0: at least 1"),
    ("max_pixels_per_class", 0, r"method.mcp.max_pixels_per_class=0: at least 1"),
    ("kmeans_iters", -1, r"method.mcp.kmeans_iters=-1: at least 0"),
    ("temperature", 0.0, r"method.mcp.temperature=0.0: .* positive"),
    ("grouping", "bins", r"method.mcp.grouping must be one of \('kmeans', 'confidence', 'fr"),
    ("separation_weight", -0.1, r"method.mcp.separation_weight=-0.1: at least 0"),
    ("separation_weight", 0.1, r"method.mcp.separation_weight=0.1 moves the prototypes, which "
                               r"carry no gradient .* set it True"),
])
def test_mcp_settings_that_cannot_train_are_refused_as_the_method_is_built(field, value, message):
  """Each was a traceback from the first trace or, for the temperature, a NaN loss that the loop
  reported as a diverged step."""
  config = load_config("configs/sdcpc/synthetic_mitb0.py", "quick")
  config.method.mcp[field] = value
  with pytest.raises(SetupError, match=message):
    get_method(config)


def test_the_configs_switch_the_guesses_beyond_the_spec():
  config = load_config("configs/sdcpc/synthetic_mitb0.py", "quick")
  config.model.ssea.update(token_embedding=False, context_norm=False)
  config.model.dssa.difference_gate = False
  method = get_method(config)
  params = jax.eval_shape(method.init, jax.random.key(0), _batch())["params"]
  names = set(traverse_util.flatten_dict(params, sep="/"))
  assert not {name for name in names if "token_embed" in name or "context_norm" in name
              or "gate_" in name}
  defaults = jax.eval_shape(_method().init, jax.random.key(0), _batch())["params"]
  assert len(traverse_util.flatten_dict(defaults)) == len(names) + 5


@pytest.mark.parametrize("config_path", ["configs/sdcpc/synthetic_mitb0.py",
                                         "configs/sdcpc/cityscapes_r101.py"])
def test_the_head_s_depthwise_conv_follows_model_dwconv_impl_on_every_backbone(config_path):
  """SSEA's depth-wise conv is the one `model.dwconv_impl` names, 'auto' resolved for the
  devices, on a ResNet (which has no depth-wise conv of its own) as on a MiT; an unknown value
  is refused."""
  config = load_config(config_path, "quick")
  for impl in ("shifted", "grouped"):
    config.model.dwconv_impl = impl
    assert get_method(config).module.decode_head.dwconv_impl == impl
  config.model.dwconv_impl = "auto"
  for platform, impl in (("cpu", "shifted"), ("gpu", "grouped"), ("tpu", "grouped")):
    with parallel.compiling_for(platform):
      assert get_method(config).module.decode_head.dwconv_impl == impl
  config.model.dwconv_impl = "bogus"
  with pytest.raises(SetupError, match=r"model.dwconv_impl must be .* got 'bogus'"):
    get_method(config)


@pytest.mark.parametrize("settings, message", [
    ({"keep_ratio": 1.5}, r"model.dssa.keep_ratio=1.5: a fraction in \(0, 1\]"),
    ({"keep_ratio": 0.0}, r"model.dssa.keep_ratio=0.0: a fraction in \(0, 1\]"),
    ({"window_keep_ratio": 0.0}, r"model.dssa.window_keep_ratio=0.0: a fraction in \(0, 1\]"),
    ({"window": 4}, r"model.dssa.window=4: .* positive odd number"),
    ({"window": -1}, r"model.dssa.window=-1: .* positive odd number"),
    ({"coarse_factor": 0}, r"model.dssa.coarse_factor=0: at least 1"),
    ({"difference": "kl"}, r"model.dssa.difference must be one of \('cosine', 'js'\)"),
    ({"window_centre": "flow"}, r"model.dssa.window_centre must be one of \('same', 'coarse_ar"),
    ({"window_centre": "coarse_argmax", "window": 7},
     r"model.dssa.window=7 with window_centre='coarse_argmax': its radius must be "
     r"model.dssa.coarse_factor=2 or one less .* window 3 or 5"),
    ({"window_centre": "coarse_argmax", "coarse_factor": 4, "window": 3},
     r"model.dssa.window=3 with window_centre='coarse_argmax': .* window 7 or 9"),
])
def test_dssa_settings_it_cannot_run_are_refused_as_the_method_is_built(settings, message):
  config = load_config("configs/sdcpc/synthetic_mitb0.py", "quick")
  config.model.dssa.update(settings)
  with pytest.raises(SetupError, match=message):
    get_method(config)


@pytest.mark.parametrize("field", ["ssea", "dssa"])
def test_attention_heads_that_do_not_split_the_head_width_are_refused_as_it_is_built(field):
  """The synthetic config's head is 16 wide: 3 heads cannot split it, 0 heads are none."""
  for heads in (3, 0):
    config = load_config("configs/sdcpc/synthetic_mitb0.py", "quick")
    config.model[field].num_heads = heads
    with pytest.raises(SetupError, match=rf"model.{field}.num_heads={heads}: .* "
                                         r"model.decoder_dim=16 channels equally"):
      get_method(config)
