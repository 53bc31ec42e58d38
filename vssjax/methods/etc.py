"""ETC (ECCV 2020): a per-frame PSPNet whose temporal consistency comes from training alone.

Training (specs/etc.md §4) runs on clips [partner, target] (clip.kind='pair' with
`ETC_PARTNER_OFFSETS`), only the target labelled; every term has its weight in `config.method`:

  L = CE_w(main) + aux_weight * CE_w(aux)              on the target (§4.1)
    + temporal_weight * L_tl(Z_t, Z_s, flow)           released (logits, M^2) or paper form (§4.2)
    + pixelwise_weight * (KL_t + KL_s)                 pixel-wise distillation, (a)
    + pair_wise_weight * PF(S_t, S_s; T_t, T_s)        cross-frame affinity, logits or features, (b)
    + self_similarity_weight * (SS_t + 0.4 SS_s)       per-frame self-similarity, (c)
    + multi_frame_weight * MF + the cell's objective   ConvLSTM over self-similarity maps, (d)

A weight of 0 removes its term and its compute: with aux_weight=0 the aux head does not run (its
parameters stay in the tree, which checkpoints and converters expect); without temporal and
distillation terms only the target goes through the student (the per-frame baseline;
clip.kind='single' then suffices), and the teacher is neither built nor run. The student runs
twice otherwise, target then partner, each pass normalising with its own batch statistics and
updating the running ones in turn (the aux head's too, unless aux_weight=0), as the release's two
torch forwards do. The supervised CE averages as `method.loss_average` says ('valid': PyTorch's
class-weighted mean, the release's).

Flow: the batch's `flow[:, 0]` is flow(partner, target) (`vssjax.flow` convention), a field on the
target's grid that brings the partner onto it: the release's FlowNet2(I_t, I_s). The partner's
logits and image are warped onto frame t with it; gradients reach both passes.

Teacher (`method.teacher`): any 'etc' config (a PSPNet of any depth, e.g. semseg's PSPNet-101),
frozen. Its variables live in `model_state['teacher']`, outside `params`, so the optimizer never
sees them; they are loaded once by `fixed_variables` when a run starts fresh (from the Orbax
checkpoint of its own training run, `teacher.workdir`, or from a PyTorch checkpoint), then saved
and resumed with the student's state. It runs in eval mode and its outputs are stop-gradient.
Its output stride must be the student's (8) for the N x N similarity terms. The `quick` variants
alone set `teacher.smoke_run_random_init`: given no weights, their teacher keeps its random
initialisation (a smoke run of the pipeline, not a distillation).

The ConvLSTM of (d): its training rule is `multi_frame_rule` (`conv_lstm.TRAINING_RULES`). A
trained cell ('adversarial', 'joint') is `params['distill_lstm']` at the heads' learning rate; a
'frozen' one is `model_state['distill_lstm']`, out of the optimizer's (and weight decay's) reach.
With pair clips the cell sees the 2-step sequence (partner, target), the partner first whatever
its time offset (3 of the 5 offsets put it after the target): our adaptation, since the spec
describes the cell only on the 3-frame (t-k, t, t+k) sequence, which needs clips the pair sampler
does not make. (c) and (d) are likewise 2-frame versions of the release's 3-frame criteria.

Students (`model.backbone`): 'r18' is PSPNet-18 (§3); 'r50'/'r101' are semseg's PSPNets (the
teacher); 'mobilenet_v2' is ETC-Mobile, a RECONSTRUCTION (the release lacks its model file): a
dilated MobileNetV2 (output stride 8, `mobilenet_v2.py`) with the same PPM (branches a quarter of
c4's width), the 256-wide classifier of PSPNet-18 and the aux head on c3.

Inference: plain per frame; logits are upsampled bilinearly with align_corners=True, then argmax.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from vssjax import configs_lib
from vssjax.configs_lib import ConfigDict
from vssjax.errors import SetupError
from vssjax.methods import etc_losses, get_method
from vssjax.methods.backbones import (backbone_family, compute_dtype, refuse_dwconv_impl,
                                      remat_policy_name)
from vssjax.methods.base import Batch, Method, Variables
from vssjax.methods.per_frame import PerFramePredictor
from vssjax.methods.variables_read import ProgramOnPart
from vssjax.models import conv_lstm
from vssjax.models.layers import flatten_time, normalize_images, unflatten_time
from vssjax.models.mobilenet_v2 import MobileNetV2
from vssjax.models.pspnet import HEAD_FEATURES, PSPNet, pspnet
from vssjax.models.resnet import RESNET_NAMES
from vssjax.train import config_record, init_from, loop

PAIR_WISE_MAPS = ("logits", "features")
LSTM = "distill_lstm"
TEACHER = "teacher"


def build_pspnet(model: ConfigDict, num_classes: int) -> PSPNet:
  """The student (or teacher) on `model.backbone`: 'r18' | 'r50' | 'r101' | 'mobilenet_v2'."""
  dtype = compute_dtype(model)
  family = backbone_family(model, "ETC", ("resnet", "mobilenet_v2"))
  refuse_dwconv_impl(model, f"ETC's PSPNet on {model.backbone!r}")
  if family == "resnet":
    return pspnet(RESNET_NAMES[model.backbone], num_classes, dropout_rate=model.dropout_rate,
                  dtype=dtype, remat=remat_policy_name(model))
  backbone = MobileNetV2(output_stride=8, dtype=dtype, remat=remat_policy_name(model))
  return PSPNet(backbone=backbone, num_classes=num_classes,
                ppm_features=backbone.out_features[-1] // 4,
                head_features=HEAD_FEATURES[18], dropout_rate=model.dropout_rate, dtype=dtype)


def _check_choices(method: ConfigDict, num_classes: int) -> None:
  """The method's settings, checked as it is built: each would otherwise fail at the first
  trace, with a traceback that does not name the config field."""
  if method.temporal_formulation not in etc_losses.TEMPORAL_FORMULATIONS:
    raise SetupError(f"method.temporal_formulation must be one of "
                     f"{etc_losses.TEMPORAL_FORMULATIONS}, got {method.temporal_formulation!r}")
  if method.pair_wise_maps not in PAIR_WISE_MAPS:
    raise SetupError(f"method.pair_wise_maps must be one of {PAIR_WISE_MAPS}, got "
                     f"{method.pair_wise_maps!r}")
  if method.multi_frame_rule not in conv_lstm.TRAINING_RULES:
    raise SetupError(f"method.multi_frame_rule must be one of {conv_lstm.TRAINING_RULES}, got "
                     f"{method.multi_frame_rule!r}")
  if method.class_weights and len(method.class_weights) != num_classes:
    raise SetupError(f"method.class_weights has {len(method.class_weights)} weights for "
                     f"data.num_classes={num_classes} classes (() for an unweighted loss)")


def _check_pool_fits(features: jax.Array, pool: int, field: str) -> None:
  """A similarity term's average pool (stride = window, incomplete windows dropped) of a feature
  map smaller than its window leaves no cell: the term is a mean of nothing, NaN, a diverged
  first step (whose empty gradient XLA:CPU can take minutes to constant-fold). Refused at trace
  time, naming the field, before the step compiles."""
  height, width = features.shape[1:3]
  if pool > min(height, width):
    raise SetupError(
        f"method.{field}={pool}: ETC's distillation average-pools the {height}x{width} feature "
        f"maps of these crops in {pool}x{pool} windows, which leaves none; set it to at most "
        f"{min(height, width)}, or train on larger crops (data.train_transform.crop_size)")


class ETCMethod(Method):
  """Trains on [partner, target] pairs with the terms `config.method` weighs; predicts per frame."""

  predicts_frames_alone = True

  def __init__(self, config: ConfigDict):
    super().__init__(config)
    method = config.method
    _check_choices(method, self.num_classes)
    self.module = build_pspnet(config.model, self.num_classes)
    self._dtype = compute_dtype(config.model)
    self._class_weights = tuple(method.class_weights) or None
    self.distills = any(method[name] > 0 for name in (
        "pixelwise_weight", "pair_wise_weight", "self_similarity_weight", "multi_frame_weight"))
    self.needs_partner = method.temporal_weight > 0 or self.distills
    self.lstm = conv_lstm.ConvLSTM() if method.multi_frame_weight > 0 else None
    self.teacher = self._build_teacher() if self.distills else None
    self._predict_logits = ProgramOnPart(self._predict_logits_impl)

  def _build_teacher(self) -> Method:
    spec = self.config.method.teacher.config
    if not spec:
      raise SetupError("ETC distillation weights are set but method.teacher.config is empty")
    teacher_config = configs_lib.load_config_file(spec)
    if self.config.method.teacher.workdir:  # that run's own overrides too, as for init.workdir
      teacher_config = config_record.as_recorded_in(
          os.path.expanduser(self.config.method.teacher.workdir), teacher_config,
          "method.teacher.config")
    teacher = get_method(teacher_config)
    if not isinstance(teacher, ETCMethod):
      raise SetupError(f"the teacher ({spec}) must be an 'etc' config (a PSPNet of any depth), "
                       f"got method {teacher.config.method.name!r}")
    if teacher.num_classes != self.num_classes:
      raise SetupError(f"the teacher ({spec}) predicts {teacher.num_classes} classes, the "
                       f"student {self.num_classes}")
    return teacher

  def _images(self, frames: jax.Array) -> jax.Array:
    return normalize_images(frames, self._dtype)

  def student_variables(self, variables: Mapping[str, Any]) -> Variables:
    """The PSPNet's own variables out of a full set (no cell, no teacher)."""
    params = {k: v for k, v in variables["params"].items() if k != LSTM}
    return {"params": params, "batch_stats": variables["batch_stats"]}

  def distillation_maps(self, variables: Variables, frames: jax.Array) -> dict[str, jax.Array]:
    """Eval-mode logits and PPM features of uint8 frames [B, H, W, 3] (as a teacher)."""
    outputs = self.module.apply(self.student_variables(variables), self._images(frames),
                                train=False)
    return {"logits": outputs["logits"], "features": outputs["features"]}

  def init(self, rng: jax.Array, batch: Batch) -> Variables:
    student_rng, lstm_rng, teacher_rng = jax.random.split(rng, 3)
    target = self._images(batch["frames"][:, -1])
    variables = dict(self.module.init({"params": student_rng}, target, train=False))
    if self.lstm is not None:
      cell = self.lstm.init(lstm_rng, jnp.zeros((1, 4, 4, 1), jnp.float32))["params"]
      if self.config.method.multi_frame_rule == "frozen":
        variables[LSTM] = cell
      else:
        variables["params"] = {**variables["params"], LSTM: cell}
    if self.teacher is not None:  # placeholder of the right shapes; `fixed_variables` fills it
      variables[TEACHER] = self.teacher.student_variables(self.teacher.init(teacher_rng, batch))
    return variables

  def fixed_variables(self) -> Variables:
    """The trained teacher, read once when a run starts fresh: {'teacher': its variables}."""
    if self.teacher is None:
      return {}
    source = self.config.method.teacher
    if source.workdir:
      try:  # `~` expanded: no shell expands it after `=`
        _, variables, step = loop.restore_for_eval(self.teacher.config,
                                                   os.path.expanduser(source.workdir))
      except SetupError as error:  # its "--workdir" is not this run's
        error.add_note(f"(the teacher's checkpoint: method.teacher.workdir={source.workdir!r})")
        raise
      print(f"teacher: step {step} of {source.workdir}", flush=True)
    elif source.torch_checkpoint:
      # A whole model's: the teacher is frozen, so a backbone-only file would leave its head
      # random for the whole training, distilling noise.
      variables = init_from.load_torch_variables(source.torch_checkpoint, self.teacher,
                                                 allow_pickle=self.config.init.allow_pickle,
                                                 whole_model=True,
                                                 setting="method.teacher.torch_checkpoint")
    elif source.smoke_run_random_init:
      # The fresh state's teacher (`init`) stays: a `quick` run tests the pipeline, and no trained
      # teacher exists for it. Said loudly, since the distillation terms then teach nothing.
      print(f"teacher: RANDOMLY INITIALISED {source.config} (method.teacher."
            f"smoke_run_random_init, set by the `quick` variants): a smoke run of the pipeline, "
            f"not a distillation", flush=True)
      return {}
    else:
      raise SetupError(
          f"ETC distillation needs the trained teacher {source.config}: train it first (python -m "
          f"vssjax.main --config={source.config} --workdir=T), then pass "
          f"--config.method.teacher.workdir=T; or set method.teacher.torch_checkpoint")
    return {TEACHER: self.teacher.student_variables(variables)}

  def _check_batch(self, batch: Batch) -> None:
    clip = batch["frames"].shape[1]
    if self.needs_partner and clip != 2:
      raise SetupError(f"ETC's temporal and distillation terms train on [partner, target] pairs "
                       f"(clip.kind='pair'); got clips of {clip} frames")
    if self.config.method.temporal_weight > 0 and "flow" not in batch:
      raise SetupError("ETC's temporal loss needs the batch's flow: set data.flow.method "
                       "('dis' or 'farneback')")

  def _train_forward(self, params, batch_stats, images, rng):
    outputs, state = self.module.apply(
        {"params": params, "batch_stats": batch_stats}, images, train=True,
        aux_logits=self.config.method.aux_weight > 0, rngs={"dropout": rng},
        mutable=["batch_stats"])
    return outputs, state["batch_stats"]

  def loss_and_metrics(self, params, model_state, batch, rng):
    self._check_batch(batch)
    method = self.config.method
    frames, labels = batch["frames"], batch["labels"][:, -1]
    student = self.student_variables({"params": params, **model_state})["params"]
    target_rng, partner_rng = jax.random.split(rng)
    images_t = self._images(frames[:, -1])
    out_t, batch_stats = self._train_forward(
        student, model_state["batch_stats"], images_t, target_rng)
    supervised, pixel_acc = etc_losses.supervised_loss(
        out_t["logits"], out_t.get("aux_logits"), labels, class_weights=self._class_weights,
        aux_weight=method.aux_weight, average=method.loss_average)
    # (name, weight, value): the loss is the weighted sum, the metrics the unweighted terms.
    terms = [("supervised", 1.0, supervised)]
    if self.needs_partner:
      images_s = self._images(frames[:, 0])
      out_s, batch_stats = self._train_forward(student, batch_stats, images_s, partner_rng)
      if method.temporal_weight > 0:
        terms.append(("temporal", method.temporal_weight, etc_losses.temporal_loss(
            out_t["logits"], out_s["logits"], images_t, images_s, batch["flow"][:, 0],
            formulation=method.temporal_formulation)))
      if self.teacher is not None:
        terms += self._distillation_terms(params, model_state, frames, out_t, out_s)
    loss = sum(weight * value for _, weight, value in terms)
    metrics = {"loss": loss, **{f"loss_{name}": value for name, _, value in terms},
               "pixel_acc": pixel_acc}
    return loss, (metrics, {**model_state, "batch_stats": batch_stats})

  def _distillation_terms(self, params, model_state, frames, out_t, out_s
                          ) -> list[tuple[str, float, jax.Array]]:
    """The weighted distillation terms (§4.3) against the frozen teacher on both frames."""
    method = self.config.method
    b = frames.shape[0]
    # One pass over both frames of each pair, in eval mode and without gradients (the pairs'
    # frames adjacent: `unflatten_time` says why).
    pairs = jnp.stack([frames[:, -1], frames[:, 0]], axis=1)
    both = self.teacher.distillation_maps(model_state[TEACHER], flatten_time(pairs))
    both = {k: unflatten_time(jax.lax.stop_gradient(v), b) for k, v in both.items()}
    teacher_t = {k: v[:, 0] for k, v in both.items()}
    teacher_s = {k: v[:, 1] for k, v in both.items()}
    terms = []
    if method.pixelwise_weight > 0:
      pixelwise = sum(etc_losses.pixelwise_distillation(
          student["logits"], teacher["logits"], temperature=method.pixelwise_temperature)
          for student, teacher in ((out_t, teacher_t), (out_s, teacher_s)))
      terms.append(("pixelwise", method.pixelwise_weight, pixelwise))
    if method.pair_wise_weight > 0:
      key = method.pair_wise_maps
      terms.append(("pair_wise", method.pair_wise_weight, etc_losses.pair_wise_distillation(
          out_t[key], out_s[key], teacher_t[key], teacher_s[key],
          released_normaliser=method.pair_wise_released_normaliser)))
    if method.self_similarity_weight > 0:
      _check_pool_fits(out_t["features"], method.self_similarity_pool, "self_similarity_pool")
      per_frame = [etc_losses.self_similarity_distillation(
          student["features"], teacher["features"], pool=method.self_similarity_pool)
          for student, teacher in ((out_t, teacher_t), (out_s, teacher_s))]
      terms.append(("self_similarity", method.self_similarity_weight,
                    etc_losses.centre_weighted(*per_frame)))
    if method.multi_frame_weight > 0:
      _check_pool_fits(out_t["features"], method.multi_frame_pool, "multi_frame_pool")
      cell = params[LSTM] if LSTM in params else model_state[LSTM]
      multi_frame, cell_objective = etc_losses.multi_frame_distillation(
          self.lstm, cell, [out_s["features"], out_t["features"]],
          [teacher_s["features"], teacher_t["features"]], rule=method.multi_frame_rule,
          pool=method.multi_frame_pool)
      terms.append(("multi_frame", method.multi_frame_weight, multi_frame))
      if method.multi_frame_rule == "adversarial":  # the cell's own loss (0 under other rules)
        terms.append(("multi_frame_cell", 1.0, cell_objective))
    return terms

  def _predict_logits_impl(self, variables, frames):
    return self.module.apply(variables, self._images(frames), train=False)["logits"]

  def predictor(self, variables: Variables) -> PerFramePredictor:
    # semseg's / ETC's upsampling is align_corners=True (specs/etc.md §3 "Inference").
    return PerFramePredictor(self._predict_logits, self.student_variables(variables),
                             self.config.data.eval_transform, align_corners=True)
