"""ETC method: which terms run for which weights, which frames each term pairs, the two passes'
running statistics, the frozen teacher, the flow batch key, the per-frame predictor. Tiny shapes:
PSPNet-18 on 32x32 crops (a 4x4 logit grid), batch 2."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests.conftest import load_config, random_config_batch, split_over_two_devices
from tests.convert.manifests import resnet_layers_manifest, resnet_stem_manifest
from vssjax import configs_lib, parallel
from vssjax.errors import SetupError
from vssjax.methods import etc, etc_losses, get_method
from vssjax.ops.resize import resize_bilinear
from vssjax.train import init_from, loop
from vssjax.train.checkpoint import Checkpointer
from vssjax.train.loop import batch_spec

CONFIG = "configs/etc/synthetic_psp18.py"
DISTILLATION = ("pixelwise", "pair_wise", "self_similarity", "multi_frame")


def _config(variant, **method):
  config = load_config(CONFIG, f"quick,variant={variant}")
  config.data.train_transform.crop_size = (32, 32)
  config.data.batch_size = 2
  config.method.update(method)
  return config


def _convs(method, variables, batch):
  """(conv count of the traced training loss, its metric names): what actually runs."""
  params = variables["params"]
  state = {k: v for k, v in variables.items() if k != "params"}
  jaxpr, (_, (metrics, _)) = jax.make_jaxpr(method.loss_and_metrics, return_shape=True)(
      params, state, batch, jax.random.key(0))
  return str(jaxpr).count("conv_general_dilated"), set(metrics)


def _random_variables(shapes, seed):
  """Variables of the given shapes, filled fast on the host (a jitted init of two PSPNets would
  dominate the test time): small normal weights, BN statistics (0, 1)."""
  rng = np.random.default_rng(seed)

  def fill(path, shape):
    name = jax.tree_util.keystr(path)
    if "batch_stats" in name:
      return np.full(shape.shape, 1.0 if name.endswith("['var']") else 0.0, shape.dtype)
    return rng.normal(0.0, 0.1, shape.shape).astype(shape.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def test_terms_follow_their_weights_and_skip_their_compute():
  baseline = _config("baseline")
  temporal = _config("temporal")
  zeroed = _config("temporal", temporal_weight=0.0)
  methods = {name: get_method(c) for name, c in
             (("baseline", baseline), ("temporal", temporal), ("zeroed", zeroed))}
  shapes = {name: jax.eval_shape(m.init, jax.random.key(0), random_config_batch(m.config))
            for name, m in methods.items()}
  assert "flow" not in batch_spec(baseline) and "teacher" not in shapes["temporal"]
  convs = {name: _convs(m, shapes[name], random_config_batch(m.config))
           for name, m in methods.items()}
  base = {"loss", "loss_supervised", "pixel_acc"}
  assert convs["baseline"][1] == base and convs["zeroed"][1] == base
  assert convs["temporal"][1] == base | {"loss_temporal"}
  # Weight 0: the partner pass is gone; the temporal loss adds a second student pass.
  assert convs["zeroed"][0] == convs["baseline"][0]
  assert convs["temporal"][0] == 2 * convs["baseline"][0]
  for term in DISTILLATION:  # each distillation weight alone: its term, plus the teacher's pass
    weights = {f"{t}_weight": float(t == term) for t in DISTILLATION}
    method = get_method(_config("distill", temporal_weight=0.0, **weights))
    variables = jax.eval_shape(method.init, jax.random.key(0), random_config_batch(method.config))
    assert set(variables) >= {"teacher"} and (("distill_lstm" in variables)
                                              == (term == "multi_frame"))
    count, names = _convs(method, variables, random_config_batch(method.config))
    assert names == base | {f"loss_{term}"}
    assert count > 2 * convs["baseline"][0]


def test_a_teacher_workdir_that_does_not_fit_names_the_teacher_setting(monkeypatch):
  """The restore's error (a checkpoint of another config) speaks of "--workdir", which is the
  student's: the teacher's setting is named too."""
  def refused(config, workdir, step=None):
    raise SetupError(f"the checkpoint in {workdir}/checkpoints was written with a different "
                     "config; use a new --workdir for this one")

  monkeypatch.setattr(etc.loop, "restore_for_eval", refused)
  config = _config("distill")
  config.method.teacher.workdir = "/runs/teacher"
  with pytest.raises(SetupError) as error:
    get_method(config).fixed_variables()
  assert error.value.__notes__ == [
      "(the teacher's checkpoint: method.teacher.workdir='/runs/teacher')"]


def test_a_teacher_workdir_under_home_is_read_there(monkeypatch, tmp_path):
  """`--config.method.teacher.workdir=~/runs/t`: no shell expands `~` after `=`."""
  read = []
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.setattr(etc.loop, "restore_for_eval",
                      lambda config, workdir, step=None: read.append(workdir) or (
                          None, {"params": {}, "batch_stats": {}}, 7))
  config = _config("distill")
  config.method.teacher.workdir = "~/runs/teacher"
  get_method(config).fixed_variables()
  assert read == [str(tmp_path / "runs" / "teacher")]


def test_a_teacher_workdir_builds_the_teacher_as_its_record_says(tmp_path, capsys):
  """A teacher trained here with an override of its config file (a narrower head) was built
  from the file alone: its checkpoint did not fit. Its workdir's config.json gives the rest."""
  config = _config("distill")
  trained = configs_lib.load_config_file(config.method.teacher.config)
  trained.model.decoder_dim = 24
  configs_lib.write_record(trained, str(tmp_path))
  config.method.teacher.workdir = str(tmp_path)
  assert get_method(config).teacher.config.model.decoder_dim == 24
  assert "method.teacher.config holds others (method.teacher.config -> record):\n" in (
      capsys.readouterr().out)


def test_bad_settings_fail_clearly():
  with pytest.raises(ValueError, match="method.teacher.config is empty"):
    get_method(_config("temporal", pixelwise_weight=1.0))
  with pytest.raises(ValueError, match="temporal_formulation"):
    get_method(_config("temporal", temporal_formulation="probabilities"))
  with pytest.raises(SetupError, match=r"method.multi_frame_rule must be one of .* 'frozn'"):
    get_method(_config("distill", multi_frame_rule="frozn"))
  with pytest.raises(SetupError,
                     match=r"method.class_weights has 19 weights for data.num_classes=9 "):
    get_method(_config("baseline", class_weights=etc_losses.CITYSCAPES_CLASS_WEIGHTS))
  method = get_method(_config("temporal"))
  batch = random_config_batch(method.config)
  variables = jax.eval_shape(method.init, jax.random.key(0), batch)
  state = {"batch_stats": variables["batch_stats"]}
  with pytest.raises(ValueError, match="data.flow.method"):
    jax.eval_shape(method.loss_and_metrics, variables["params"], state,
                   {k: v for k, v in batch.items() if k != "flow"}, jax.random.key(0))
  single = {k: v[:, 1:] for k, v in batch.items() if k != "flow"}
  with pytest.raises(ValueError, match=r"clip.kind='pair'"):
    jax.eval_shape(method.loss_and_metrics, variables["params"], state, single,
                   jax.random.key(0))


@pytest.mark.parametrize("term", ["self_similarity", "multi_frame"])
def test_a_similarity_pool_larger_than_the_feature_maps_is_refused_naming_it(term):
  """32x32 crops give 4x4 feature maps: a 5x5 pool would leave nothing to compare (a NaN term)."""
  weights = {f"{t}_weight": float(t == term) for t in DISTILLATION}
  method = get_method(_config("distill", temporal_weight=0.0, **{f"{term}_pool": 5}, **weights))
  batch = random_config_batch(method.config)
  variables = jax.eval_shape(method.init, jax.random.key(0), batch)
  state = {k: v for k, v in variables.items() if k != "params"}
  with pytest.raises(SetupError, match=rf"method.{term}_pool=5: .* 4x4 feature maps .* at most 4"):
    jax.eval_shape(method.loss_and_metrics, variables["params"], state, batch, jax.random.key(0))
  method.config.method[f"{term}_pool"] = 4  # the largest that fits
  jax.eval_shape(method.loss_and_metrics, variables["params"], state, batch, jax.random.key(0))


@pytest.fixture(scope="module")
def distilling():
  """All terms on, the ConvLSTM trained adversarially (its cell in params), a teacher unlike the
  student."""
  config = _config("distill", multi_frame_rule="adversarial")
  method = get_method(config)
  batch = random_config_batch(config)
  variables = _random_variables(jax.eval_shape(method.init, jax.random.key(0), batch), seed=0)
  variables["teacher"] = _random_variables(variables["teacher"], seed=1)
  return method, variables, batch


def test_gradients_reach_the_student_only_and_the_teacher_stays(distilling):
  """One differentiated training loss w.r.t. the student's params AND the teacher's variables.

  The train step (`train/step.py`) updates `params` from their gradients and takes the returned
  model_state as is: the teacher, outside `params` and returned unchanged, is never updated.
  """
  method, variables, batch = distilling
  params = variables["params"]
  state = {k: v for k, v in variables.items() if k not in ("params", "teacher")}
  assert "distill_lstm" in params and "teacher" not in params

  def loss(params, teacher):
    return method.loss_and_metrics(params, {**state, "teacher": teacher}, batch,
                                   jax.random.key(3))

  (_, (metrics, new_state)), (student_grads, teacher_grads) = jax.jit(
      jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, variables["teacher"])
  assert all(not np.asarray(g).any() for g in jax.tree.leaves(teacher_grads))
  jax.tree.map(np.testing.assert_array_equal, variables["teacher"], new_state["teacher"])
  reached = lambda tree: min(float(np.abs(np.asarray(g)).max()) for g in jax.tree.leaves(tree))
  # Every student weight gets a gradient, the adversarially trained cell too.
  assert reached(student_grads["backbone"]) > 0 and reached(student_grads["cls"]) > 0
  assert reached(student_grads["distill_lstm"]) > 0
  stats_moved = jax.tree.map(lambda a, b: np.abs(a - np.asarray(b)).max(),
                             variables["batch_stats"], new_state["batch_stats"])
  assert min(jax.tree.leaves(stats_moved)) > 0  # running statistics updated, outside params

  metrics = {k: float(v) for k, v in metrics.items()}
  m = method.config.method
  expected = (metrics["loss_supervised"] + m.temporal_weight * metrics["loss_temporal"]
              + sum(m[f"{t}_weight"] * metrics[f"loss_{t}"] for t in DISTILLATION)
              + metrics["loss_multi_frame_cell"])
  assert metrics["loss"] == pytest.approx(expected, rel=1e-5)
  assert all(metrics[f"loss_{t}"] > 0 for t in ("temporal",) + DISTILLATION)


def test_teacher_is_read_once_from_its_run(distilling, monkeypatch):
  method, variables, _ = distilling
  trained = {"params": variables["teacher"]["params"], "batch_stats": {}, "teacher": "not kept"}
  calls = []

  def restore_for_eval(config, workdir):
    calls.append((config.model.backbone, workdir))
    return method.teacher, trained, 7

  monkeypatch.setattr(etc.loop, "restore_for_eval", restore_for_eval)
  method.config.method.teacher.workdir = "/runs/teacher"
  try:
    fixed = method.fixed_variables()
  finally:
    method.config.method.teacher.workdir = ""
  assert calls == [("r18", "/runs/teacher")]
  assert set(fixed) == {"teacher"} and set(fixed["teacher"]) == {"params", "batch_stats"}
  leaves = jax.tree.leaves(fixed["teacher"]["params"])
  assert leaves and all(a is b for a, b in zip(leaves, jax.tree.leaves(trained["params"]),
                                               strict=True))
  assert get_method(_config("temporal")).fixed_variables() == {}


def test_a_teacher_converted_into_a_workdir_is_read_from_it(distilling, tmp_path):
  """`python -m vssjax.convert` of a teacher's released weights saves its variables alone, no
  optimizer state: `method.teacher.workdir` reads them (the partial restore of evaluation)."""
  method, variables, _ = distilling
  teacher = method.teacher
  state, sharding, _, _ = loop.create_state(teacher.config, teacher,
                                            parallel.mesh_from_config(teacher.config),
                                            abstract=True)
  converted = init_from.state_with_variables(state, variables["teacher"], None, sharding)
  with contextlib.closing(Checkpointer(str(tmp_path), async_save=False)) as checkpointer:
    checkpointer.save(0, converted, force=True)
  method.config.method.teacher.workdir = str(tmp_path)
  try:
    fixed = method.fixed_variables()
  finally:
    method.config.method.teacher.workdir = ""
  jax.tree.map(np.testing.assert_array_equal, fixed["teacher"], variables["teacher"])


def test_a_missing_teacher_checkpoint_names_its_setting(distilling):
  method, _, _ = distilling
  method.config.method.teacher.torch_checkpoint = "/nowhere/teacher.pth"
  try:
    with pytest.raises(SetupError, match="/nowhere/teacher.pth: no such file") as raised:
      method.fixed_variables()
  finally:
    method.config.method.teacher.torch_checkpoint = ""
  assert ("(the checkpoint of method.teacher.torch_checkpoint='/nowhere/teacher.pth')"
          in raised.value.__notes__)


def test_a_backbone_only_teacher_checkpoint_is_refused(distilling, tmp_path):
  """An ImageNet ResNet file loaded the frozen teacher's backbone and left its PPM and classifier
  random, without a word: the student would distill noise for the whole run."""
  method, _, _ = distilling
  path = tmp_path / "resnet18_imagenet.pth"
  torch.save({k: torch.zeros(shape) for k, shape in
              (resnet_stem_manifest(18, False) | resnet_layers_manifest(18)).items()}, path)
  method.config.method.teacher.torch_checkpoint = str(path)
  try:
    with pytest.raises(SetupError, match="backbone weights only") as raised:
      method.fixed_variables()
  finally:
    method.config.method.teacher.torch_checkpoint = ""
  assert f"(the checkpoint of method.teacher.torch_checkpoint='{path}')" in raised.value.__notes__


def test_only_a_quick_run_keeps_a_random_teacher(distilling, capsys):
  """A `quick` smoke run has no trained teacher to read: its randomly initialised one stays (the
  fresh state's), said loudly. Any other run without a teacher is an error saying how to get one."""
  method, _, _ = distilling
  teacher = method.config.method.teacher
  assert teacher.smoke_run_random_init  # set by the quick variant
  assert method.fixed_variables() == {}
  assert "teacher: RANDOMLY INITIALISED" in capsys.readouterr().out
  teacher.smoke_run_random_init = False
  try:
    with pytest.raises(ValueError, match=r"train it first \(python -m vssjax.main --config=.*"
                                         r"synthetic_psp18.py:teacher,quick --workdir=T\), then "
                                         r"pass --config.method.teacher.workdir=T"):
      method.fixed_variables()
  finally:
    teacher.smoke_run_random_init = True


def test_predictor_upsamples_with_align_corners_per_frame(distilling):
  method, variables, _ = distilling
  frame = np.random.default_rng(4).integers(0, 256, (40, 56, 3), np.uint8)
  method.config.data.eval_transform.update(scale=(56, 40), size_divisor=8)
  predictor = method.predictor(variables)
  [(index, labels)] = predictor.push(frame)
  assert index == 0 and labels.shape == (40, 56) and labels.dtype == np.int32
  logits = method.module.apply(method.student_variables(variables),
                               method._images(jnp.asarray(frame)[None]), train=False)["logits"]
  upsampled = resize_bilinear(logits, (40, 56), align_corners=True)
  np.testing.assert_array_equal(labels, np.argmax(upsampled[0], -1))
  assert predictor.push(frame)[0][0] == 1


def test_distillation_pairs_each_frame_with_its_own_teacher_maps(distilling, monkeypatch):
  """Spec §4.3: every term compares the student and the teacher on the SAME frame (t with t, s with
  s, the cell's sequences both (s, t)), so a student whose maps are the teacher's own has zero
  distillation loss. A student that matches on t only is left with 0.4 x the partner's
  self-similarity loss (SS_t + 0.4 SS_s, the centre frame weighted 1). The teacher's maps are a
  fixed random projection of each frame (a random PSPNet's are nearly constant over pixels).
  Likewise the pixel-wise term of that student is the partner's KL(teacher_s || student_s) alone:
  were KL_s to compare the target frame again, the partner frame would never be distilled."""
  method, variables, batch = distilling
  rng = np.random.default_rng(9)
  projections = {"logits": rng.normal(size=(3, 9)), "features": rng.normal(size=(3, 16))}

  def maps(_, frames):  # [B, 32, 32, 3] -> [B, 4, 4, C], the stride-8 grid
    pixels = frames[:, ::8, ::8].astype(jnp.float32) / 255 - 0.5
    return {k: jnp.einsum("bhwc,cd->bhwd", pixels, w) for k, w in projections.items()}

  monkeypatch.setattr(method.teacher, "distillation_maps", maps)
  frames = jnp.asarray(batch["frames"])
  out_t, out_s = maps(None, frames[:, -1]), maps(None, frames[:, 0])
  state = {k: v for k, v in variables.items() if k != "params"}
  terms = jax.jit(lambda student_t, student_s: {
      name: value for name, _, value in method._distillation_terms(
          variables["params"], state, frames, student_t, student_s)})
  values = terms(out_t, out_s)
  assert set(values) == set(DISTILLATION) | {"multi_frame_cell"}
  for name in DISTILLATION:
    assert float(values[name]) == pytest.approx(0.0, abs=1e-7), name
  partner = etc_losses.self_similarity_distillation(
      out_t["features"], out_s["features"], pool=method.config.method.self_similarity_pool)
  assert float(partner) > 1e-3
  target_only = terms(out_t, out_t)
  np.testing.assert_allclose(target_only["self_similarity"], 0.4 * partner, rtol=1e-4)
  partner_kl = etc_losses.pixelwise_distillation(
      out_t["logits"], out_s["logits"], temperature=method.config.method.pixelwise_temperature)
  assert float(partner_kl) > 1e-3
  np.testing.assert_allclose(target_only["pixelwise"], partner_kl, rtol=1e-4)


def test_a_batch_split_over_devices_keeps_each_samples_frames_and_teacher_maps_on_its_device(
    distilling):
  """The teacher's one pass over both frames of every pair runs on each device's own pairs: the
  distillation terms of a batch split over 2 devices move nothing but sums between them (no
  gather of the frames, no permute of the teacher's maps) and equal those of the whole batch."""
  method, variables, batch = distilling
  state = {k: v for k, v in variables.items() if k != "params"}
  student = method.student_variables(variables)

  def terms(params, state, frames):
    out_t, out_s = (method.distillation_maps(student, frames[:, i]) for i in (-1, 0))
    return {name: value for name, _, value in method._distillation_terms(
        params, state, frames, out_t, out_s)}

  moved, split_values, whole = split_over_two_devices(
      terms, (variables["params"], state, batch["frames"]), split=(2,))
  assert {op for op, _ in moved} == {"all-reduce"}
  for name, value in whole.items():
    np.testing.assert_allclose(split_values[name], value, rtol=1e-5, atol=1e-9, err_msg=name)


def test_temporal_term_and_running_statistics_follow_the_two_passes():
  """Spec §4.2: L_tl(Z_t, Z_s, I_t, I_s, flow(partner, target)) on the target pass then the partner
  pass; the partner pass normalises with its own batch and updates the running statistics the
  target pass left (the release's two torch forwards). Dropout off, so both passes recompute."""
  config = _config("temporal")
  config.model.dropout_rate = 0.0
  method = get_method(config)
  batch = random_config_batch(config)
  variables = _random_variables(jax.eval_shape(method.init, jax.random.key(0), batch), seed=2)
  params, state = variables["params"], {"batch_stats": variables["batch_stats"]}
  _, (metrics, new_state) = jax.jit(method.loss_and_metrics)(params, state, batch,
                                                             jax.random.key(0))
  forward = jax.jit(lambda stats, images: method.module.apply(
      {"params": params, "batch_stats": stats}, images, train=True, mutable=["batch_stats"]))
  images_t, images_s = (method._images(jnp.asarray(batch["frames"][:, i])) for i in (-1, 0))
  out_t, stats = forward(state["batch_stats"], images_t)
  out_s, stats = forward(stats["batch_stats"], images_s)
  temporal = etc_losses.temporal_loss(out_t["logits"], out_s["logits"], images_t, images_s,
                                      jnp.asarray(batch["flow"][:, 0]),
                                      formulation=config.method.temporal_formulation)
  np.testing.assert_allclose(metrics["loss_temporal"], temporal, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               new_state["batch_stats"], stats["batch_stats"])


def test_class_weights_and_loss_average_reach_the_supervised_loss():
  """`method.class_weights` (CriterionDSN's weighted CE on Cityscapes, spec §4.1) weigh the
  supervised term: weighting one class up changes it, and () is the unweighted CE. With uniform
  weights 2 (every pixel labelled), 'valid' (the weighted mean) is the unweighted CE and
  `method.loss_average='all'` (weighted sum over the pixel count) twice it."""
  losses = []
  for weights, average in (((), "valid"), ((1.0,) * 9, "valid"), ((10.0,) + (1.0,) * 8, "valid"),
                           ((2.0,) * 9, "valid"), ((2.0,) * 9, "all")):
    method = get_method(_config("baseline", class_weights=weights, loss_average=average))
    batch = random_config_batch(method.config)
    variables = _random_variables(jax.eval_shape(method.init, jax.random.key(0), batch), seed=3)
    _, (metrics, _) = jax.jit(method.loss_and_metrics)(
        variables["params"], {"batch_stats": variables["batch_stats"]}, batch, jax.random.key(0))
    losses.append(float(metrics["loss_supervised"]))
  assert losses[0] == pytest.approx(losses[1], rel=1e-5) == pytest.approx(losses[3], rel=1e-5)
  assert abs(losses[2] - losses[0]) > 1e-3 * abs(losses[0])
  assert losses[4] == pytest.approx(2 * losses[0], rel=1e-5)


def test_a_zero_aux_weight_skips_the_aux_head():
  """aux_weight=0: the aux head's parameters stay (checkpoints and converters expect the released
  tree), but neither pass runs it (its 3x3 conv is gone from each; the 1x1 classifier is a
  matmul), so its BatchNorm's running statistics stay; the rest of the step is the default's,
  whose aux term and statistics update remain."""
  runs = {}
  for aux_weight in (etc_losses.AUX_WEIGHT, 0.0):
    method = get_method(_config("temporal", aux_weight=aux_weight))
    batch = random_config_batch(method.config)
    variables = _random_variables(jax.eval_shape(method.init, jax.random.key(0), batch), seed=4)
    assert "aux" in variables["params"]
    state = {"batch_stats": variables["batch_stats"]}
    convs, _ = _convs(method, variables, batch)
    _, (metrics, new_state) = jax.jit(method.loss_and_metrics)(
        variables["params"], state, batch, jax.random.key(0))
    runs[aux_weight] = convs, metrics, new_state["batch_stats"]
  aux_before = variables["batch_stats"]["aux"]
  (convs, metrics, stats), (convs_0, metrics_0, stats_0) = runs.values()
  assert convs_0 == convs - 2
  jax.tree.map(np.testing.assert_array_equal, stats_0["aux"], aux_before)
  assert not np.array_equal(stats["aux"]["conv_bn"]["bn"]["mean"],
                            aux_before["conv_bn"]["bn"]["mean"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               {k: v for k, v in stats.items() if k != "aux"},
               {k: v for k, v in stats_0.items() if k != "aux"})
  np.testing.assert_allclose(metrics["loss_temporal"], metrics_0["loss_temporal"], rtol=1e-5)
  assert float(metrics["loss_supervised"]) > float(metrics_0["loss_supervised"]) + 1e-3


def test_the_logged_pixel_accuracy_scores_the_logits_the_loss_upsamples(monkeypatch):
  """The release upsamples with align_corners=True; the logged accuracy once did with False (a
  different map from the one the loss scores)."""
  method = get_method(_config("baseline", aux_weight=0.0))
  batch = random_config_batch(method.config)
  variables = _random_variables(jax.eval_shape(method.init, jax.random.key(0), batch), seed=5)
  seen = {}
  supervised_loss = etc.etc_losses.supervised_loss
  monkeypatch.setattr(etc.etc_losses, "supervised_loss",
                      lambda logits, *a, **k: supervised_loss(seen.setdefault("logits", logits),
                                                              *a, **k))
  _, (metrics, _) = method.loss_and_metrics(
      variables["params"], {"batch_stats": variables["batch_stats"]}, batch, jax.random.key(0))
  labels = batch["labels"][:, -1]
  valid = labels != 255

  def accuracy(align_corners):
    upsampled = resize_bilinear(seen["logits"].astype(jnp.float32), labels.shape[-2:],
                                align_corners=align_corners)
    return np.sum((np.argmax(upsampled, -1) == labels) & valid) / valid.sum()

  np.testing.assert_allclose(metrics["pixel_acc"], accuracy(True), rtol=1e-6)
  assert accuracy(True) != accuracy(False)  # the batch tells the two apart


def test_etc_mobile_ppm_branches_are_a_quarter_of_mobilenets_width():
  """Spec §3's PPM has four branches a quarter of the backbone's width (PSPNet-18: 512 -> 128, the
  output twice it); ETC-Mobile's own head is not released (§3), and this reconstruction keeps that
  rule: 1280 -> 320 on MobileNetV2, the PPM output 2560 wide. A wider branch would train, and
  count the FLOPs and parameters of, another model than the one configs/etc documents."""
  config = load_config("configs/etc/camvid_mobilenet.py", "quick,variant=baseline")
  module = get_method(config).module
  shapes = jax.eval_shape(lambda: module.init(
      {"params": jax.random.key(0), "dropout": jax.random.key(1)}, jnp.zeros((1, 32, 32, 3)),
      train=False))["params"]
  assert [shapes["ppm"][f"features_{i}"]["conv"]["kernel"].shape for i in range(4)] == [
      (1, 1, 1280, 320)] * 4
  assert shapes["cls"]["conv_bn"]["conv"]["kernel"].shape == (3, 3, 2560, 256)
