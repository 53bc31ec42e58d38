"""SegFormer, the per-frame baseline: MiT backbone + all-MLP head, applied to every frame."""

from __future__ import annotations

import jax

from vssjax.configs_lib import ConfigDict
from vssjax.methods import losses
from vssjax.methods.backbones import OWN, build_backbone, compute_dtype
from vssjax.methods.base import Batch, Method, Variables
from vssjax.methods.per_frame import PerFramePredictor
from vssjax.methods.variables_read import ProgramOnPart
from vssjax.models.layers import flatten_time, normalize_images
from vssjax.models.segformer import SegFormer
from vssjax.models.segformer_head import SegFormerHead

def build_segformer(model: ConfigDict, num_classes: int) -> SegFormer:
  head = SegFormerHead(num_classes=num_classes, embed_dim=model.decoder_dim,
                       dropout_rate=model.dropout_rate, dtype=compute_dtype(model))
  return SegFormer(backbone=build_backbone(model, "SegFormer", ("mit", OWN)), decode_head=head)


class SegFormerMethod(Method):
  """Trains on single frames (or every frame of a clip); predicts frame by frame."""

  predicts_frames_alone = True
  sliding_window_inference = True

  def __init__(self, config: ConfigDict):
    super().__init__(config)
    self.module = build_segformer(config.model, self.num_classes)
    self._dtype = compute_dtype(config.model)
    self._predict_logits = ProgramOnPart(self._predict_logits_impl)

  def _logits(self, variables: Variables, frames: jax.Array, *, train: bool, rngs=None,
              mutable=False):
    images = normalize_images(frames, self._dtype)
    return self.module.apply(variables, images, train=train, rngs=rngs, mutable=mutable)

  def init(self, rng: jax.Array, batch: Batch) -> Variables:
    frames = flatten_time(batch["frames"])
    images = normalize_images(frames, self._dtype)
    return dict(self.module.init({"params": rng}, images, train=False))

  def loss_and_metrics(self, params, model_state, batch, rng):
    frames = flatten_time(batch["frames"])
    labels = flatten_time(batch["labels"])
    logits, new_state = self._logits(
        {"params": params, **model_state}, frames, train=True,
        rngs={"dropout": rng}, mutable=["batch_stats"])
    loss, pixel_acc = losses.cross_entropy_at_label_size(
        logits, labels, average=self.config.method.loss_average)
    metrics = {"loss": loss, "pixel_acc": pixel_acc}
    return loss, (metrics, dict(new_state))

  def _predict_logits_impl(self, variables, frames):
    return self._logits(variables, frames, train=False)

  def predictor(self, variables: Variables) -> PerFramePredictor:
    return PerFramePredictor(self._predict_logits, variables, self.config.data.eval_transform,
                             windows=self.sliding_windows)
