"""Schedule values and parameter groups against hand-computed mmcv/PyTorch AdamW numbers."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vssjax import configs_lib
from vssjax.errors import SetupError
from vssjax.train import optimizer


def test_poly_warmup_schedule_matches_mmcv_formula():
  schedule = optimizer.poly_warmup_schedule(
      1e-3, total_steps=10, warmup_steps=4, warmup_ratio=1e-6, power=1.0, min_lr=0.0)
  # step 0: poly 1e-3, warm-up factor 1 - (1 - 0)(1 - 1e-6) = 1e-6.
  np.testing.assert_allclose(schedule(0), 1e-9, rtol=1e-5)
  # step 2: poly 8e-4, factor 1 - 0.5 * (1 - 1e-6) = 0.5000005.
  np.testing.assert_allclose(schedule(2), 8e-4 * 0.5000005, rtol=1e-6)
  # step 5: after warm-up, plain poly.
  np.testing.assert_allclose(schedule(5), 5e-4, rtol=1e-6)
  np.testing.assert_allclose(schedule(10), 0.0, atol=1e-12)


def test_dcfm_poly_after_warmup_schedule():
  """DCFM's PolyScheduler (specs/dcfm.md §6.1): the warm-up ramps the BASE lr,
  base * ((1-r) * s/W + r), and the poly decay restarts after it, (1 - (s-W)/(T-W))^p, so the lr
  is the full base at the end of warm-up."""
  schedule = optimizer.poly_warmup_schedule(
      1.0, total_steps=10, warmup_steps=2, warmup_ratio=0.1, power=1.0, min_lr=0.0,
      poly_after_warmup=True)
  np.testing.assert_allclose([schedule(s) for s in (0, 1, 2, 6, 10)], [0.1, 0.55, 1.0, 0.5, 0.0],
                             rtol=1e-6, atol=1e-7)


def test_poly_power_and_min_lr():
  schedule = optimizer.poly_warmup_schedule(
      1.0, total_steps=4, warmup_steps=0, warmup_ratio=1e-6, power=2.0, min_lr=0.1)
  np.testing.assert_allclose(schedule(1), 0.9 * 0.75**2 + 0.1, rtol=1e-6)


PARAMS = {
    "backbone": {
        "block1_0": {"norm1": {"scale": jnp.ones(2)}, "attn": {"q": {"kernel": jnp.ones(2)}}},
    },
    "decode_head": {"linear_fuse": {"bn": {"scale": jnp.ones(2)}},
                    "block_0": {"norm1": {"scale": jnp.ones(2)}}},
}
GROUPS = (("pos_block", 1.0, 0.0), ("head", 10.0, 1.0), ("norm", 1.0, 0.0))


def test_first_matching_group_wins():
  labels = optimizer.param_group_labels(PARAMS, GROUPS)
  assert labels["backbone"]["block1_0"]["norm1"]["scale"] == 2  # 'norm'
  assert labels["backbone"]["block1_0"]["attn"]["q"]["kernel"] == 3  # default group
  assert labels["decode_head"]["linear_fuse"]["bn"]["scale"] == 1  # 'head'
  # A norm inside the head (DTERN's cluster blocks) takes the head's rule, listed first, as in
  # mmcv's resolution: its path matches 'head' and 'norm'.
  assert labels["decode_head"]["block_0"]["norm1"]["scale"] == 1
  reordered = optimizer.param_group_labels(PARAMS, (GROUPS[0], GROUPS[2], GROUPS[1]))
  assert reordered["decode_head"]["block_0"]["norm1"]["scale"] == 1  # now 'norm', listed second


def test_adamw_step_applies_group_lr_and_decay():
  optim = configs_lib.base_config().optim
  optim.update(lr=1e-2, weight_decay=0.5, warmup_steps=0, param_groups=GROUPS)
  tx, _ = optimizer.make_optimizer(optim, total_steps=100, params=PARAMS)
  grads = {"backbone": {"block1_0": {"norm1": {"scale": jnp.full(2, 2.0)},
                                     "attn": {"q": {"kernel": jnp.full(2, -3.0)}}}},
           "decode_head": {"linear_fuse": {"bn": {"scale": jnp.full(2, 0.5)}},
                           "block_0": {"norm1": {"scale": jnp.full(2, 0.5)}}}}
  updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  new = optax.apply_updates(PARAMS, updates)
  # First AdamW step: p - lr * (g / (|g| + eps) + wd * p), lr = 1e-2 * (1 - 0/100).
  lr, eps = 1e-2, 1e-8
  expect = lambda g, lr_mult, wd: 1.0 - lr * lr_mult * (g / (abs(g) + eps) + wd * 1.0)
  np.testing.assert_allclose(new["backbone"]["block1_0"]["norm1"]["scale"], expect(2.0, 1, 0.0),
                             rtol=1e-6)
  np.testing.assert_allclose(new["backbone"]["block1_0"]["attn"]["q"]["kernel"],
                             expect(-3.0, 1, 0.5), rtol=1e-6)
  np.testing.assert_allclose(new["decode_head"]["linear_fuse"]["bn"]["scale"],
                             expect(0.5, 10, 0.5), rtol=1e-6)


@pytest.mark.parametrize("field, value, message", [
    ("accumulate_steps", 0, r"optim.accumulate_steps=0: at least 1"),
    ("warmup_steps", -5, r"optim.warmup_steps=-5: 0 \(no warm-up\) or more"),
    ("grad_clip_norm", -1.0, r"optim.grad_clip_norm=-1.0: 0 \(no clipping\)"),
])
def test_counts_that_trained_without_a_word_are_refused(field, value, message):
  optim = configs_lib.base_config().optim
  optimizer.make_optimizer(optim, total_steps=100, params=PARAMS)
  optim[field] = value
  with pytest.raises(SetupError, match=message):
    optimizer.make_optimizer(optim, total_steps=100, params=PARAMS)


def test_an_unknown_optimizer_is_refused_naming_the_choices():
  optim = configs_lib.base_config().optim
  optim.name = "adam"
  with pytest.raises(SetupError, match=r"optim.name must be 'adamw' or 'sgd', got 'adam'"):
    optimizer.make_optimizer(optim, total_steps=100, params=PARAMS)


@pytest.mark.parametrize("clip,accumulate", [(1.0, 1), (0.0, 2)])
def test_clipped_or_accumulated_adamw_still_takes_adams_step(clip, accumulate):
  optim = configs_lib.base_config().optim
  optim.update(lr=1e-2, weight_decay=0.0, warmup_steps=0, param_groups=(),
               grad_clip_norm=clip, accumulate_steps=accumulate)
  params = {"w": jnp.zeros(2)}
  tx, _ = optimizer.make_optimizer(optim, total_steps=100, params=params)
  state = tx.init(params)
  updates, state = tx.update({"w": jnp.array([30.0, 40.0])}, state, params)
  if accumulate == 2:
    np.testing.assert_array_equal(updates["w"], 0.0)  # first micro-step only accumulates
    updates, state = tx.update({"w": jnp.array([30.0, 40.0])}, state, params)
  # Adam's first step is lr * sign(g) whatever the scale, and global-norm clipping only rescales,
  # so this cannot see clipping (test_sgd_step_shows_global_norm_clipping does); it checks that the
  # chain still takes Adam's step. Accumulated, it is made at train step 1, lr 1e-2 * (1 - 1/100).
  lr = 1e-2 * (1 - (accumulate - 1) / 100)
  np.testing.assert_allclose(updates["w"], [-lr, -lr], rtol=1e-5)


def test_accumulated_updates_follow_the_schedule_in_train_steps():
  """With k-step accumulation the schedule still counts train steps (micro-batches): the update
  made at micro-step t uses lr(t), and the decay reaches its end at `total_steps`."""
  optim = configs_lib.base_config().optim
  optim.update(name="sgd", momentum=0.0, lr=1.0, weight_decay=0.0, warmup_steps=4,
               warmup_ratio=0.1, param_groups=(), accumulate_steps=2)
  params = {"w": jnp.zeros(())}
  tx, schedule = optimizer.make_optimizer(optim, total_steps=12, params=params)
  state = tx.init(params)
  for t in range(12):
    updates, state = tx.update({"w": jnp.ones(())}, state, params)
    expected = -schedule(t) if t % 2 == 1 else 0.0  # SGD on a mean gradient of 1: -lr
    np.testing.assert_allclose(updates["w"], expected, rtol=1e-6, atol=1e-12, err_msg=f"step {t}")
  assert float(schedule(11)) == pytest.approx(1.0 / 12)  # near the end of the decay


@pytest.mark.parametrize("clip,grads,expected", [
    (1.0, (30.0, 40.0), (0.6, 0.8)),  # global norm 50 -> scaled to norm 1 (not per leaf: 1, 1)
    (1.0, (0.3, 0.4), (0.3, 0.4)),  # norm 0.5 <= 1: left as it is
    (0.0, (30.0, 40.0), (30.0, 40.0)),  # clipping disabled
])
def test_sgd_step_shows_global_norm_clipping(clip, grads, expected):
  """Plain SGD (momentum 0, no decay) moves by -lr * g, so the step's size shows the clipped
  gradient, which AdamW's scale-free first step hides. The norm is over all leaves together."""
  optim = configs_lib.base_config().optim
  optim.update(name="sgd", momentum=0.0, lr=0.1, weight_decay=0.0, warmup_steps=0,
               param_groups=(), grad_clip_norm=clip, accumulate_steps=1)
  params = {"a": jnp.zeros(()), "b": jnp.zeros(())}
  tx, _ = optimizer.make_optimizer(optim, total_steps=100, params=params)
  updates, _ = tx.update({"a": jnp.array(grads[0]), "b": jnp.array(grads[1])}, tx.init(params),
                         params)
  np.testing.assert_allclose([updates["a"], updates["b"]], -0.1 * np.array(expected), rtol=1e-6)


def test_each_group_decays_from_its_own_base_lr_to_the_absolute_min_lr():
  """mmcv's PolyLrUpdaterHook (and DCFM's per-optimizer PolyScheduler) decays every param group
  from its own base lr (lr * lr_mult) to the same absolute min_lr:
  lr_g(i) = (lr * m - min) * (1 - i/T)^p + min, scaled by the warm-up factor during warm-up;
  not m * ((lr - min) * (1 - i/T)^p + min), which would end at m * min."""
  optim = configs_lib.base_config().optim
  optim.update(name="sgd", momentum=0.0, lr=1.0, weight_decay=0.0, warmup_steps=2,
               warmup_ratio=0.1, power=1.0, min_lr=0.1, param_groups=(("head", 10.0, 1.0),))
  params = {"head": jnp.zeros(()), "backbone": jnp.zeros(())}
  tx, _ = optimizer.make_optimizer(optim, total_steps=4, params=params)
  state = tx.init(params)
  for i in range(4):
    updates, state = tx.update({"head": jnp.ones(()), "backbone": jnp.ones(())}, state, params)
    coeff = 1 - i / 4
    warmup = 0.1 + (i / 2) * 0.9 if i < 2 else 1.0
    for name, base in (("head", 10.0), ("backbone", 1.0)):
      expected = -((base - 0.1) * coeff + 0.1) * warmup  # SGD on a gradient of 1: -lr
      np.testing.assert_allclose(updates[name], expected, rtol=1e-6, err_msg=f"{name} step {i}")
