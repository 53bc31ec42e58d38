"""SegFormer, the per-frame baseline: MiT backbone + all-MLP head, applied to every frame."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vssjax.configs_lib import ConfigDict, base_config
from vssjax.errors import SetupError
from vssjax.methods import losses
from vssjax.methods.base import Batch, flatten_time, Method, Variables
from vssjax.methods.per_frame import PerFramePredictor
from vssjax.models.layers import normalize_images
from vssjax.models.mit import mit
from vssjax.models.segformer import SegFormer
from vssjax.models.segformer_head import SegFormerHead

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(model: ConfigDict):
  if model.dtype not in COMPUTE_DTYPES:
    raise SetupError(f"model.dtype must be one of {sorted(COMPUTE_DTYPES)}, got {model.dtype!r}")
  return COMPUTE_DTYPES[model.dtype]


def resolve_dwconv_impl(model: ConfigDict) -> str:
  """`model.dwconv_impl` resolved for this run's devices: 'shifted' or 'grouped', the depth-wise
  conv of every layer that has one (MiT's Mix-FFN, the video heads), whatever the backbone.
  'auto' picks the shifted multiply-adds on CPU, where XLA runs grouped convs ~30x slower
  (notes §6), and the grouped conv elsewhere."""
  impl = model.dwconv_impl
  if impl not in ("auto", "shifted", "grouped"):
    raise SetupError(f"model.dwconv_impl must be 'auto', 'shifted' or 'grouped', got {impl!r}")
  if impl == "auto":
    return "shifted" if jax.default_backend() == "cpu" else "grouped"
  return impl


def build_backbone(model: ConfigDict):
  """MiT backbone from `model.backbone` ('b0'..'b5') and any non-empty `backbone_overrides`."""
  overrides = {k: tuple(v) for k, v in model.backbone_overrides.items() if v}
  if not 0.0 <= model.drop_path_rate < 1.0:
    raise SetupError(f"model.drop_path_rate={model.drop_path_rate}: a probability in [0, 1)")
  return mit(model.backbone, drop_path_rate=model.drop_path_rate, dtype=compute_dtype(model),
             dwconv_impl=resolve_dwconv_impl(model), attention_impl=_attention_impl(model),
             scan_blocks=model.scan_blocks, **overrides)


def _attention_impl(model: ConfigDict) -> str:
  """`model.attention_impl`, refused where cuDNN's fused attention cannot run: it needs an NVIDIA
  GPU and bf16 queries, and `jax.nn.dot_product_attention` would otherwise raise deep inside the
  first trace, with no word of the setting."""
  impl = model.attention_impl
  if impl not in ("xla", "cudnn"):
    raise SetupError(f"model.attention_impl must be 'xla' or 'cudnn', got {impl!r}")
  if impl == "cudnn" and jax.default_backend() != "gpu":
    raise SetupError(f"model.attention_impl='cudnn' is cuDNN's fused attention, for NVIDIA GPUs; "
                     f"this run's devices are {jax.default_backend()!r}: use 'xla'")
  if impl == "cudnn" and model.dtype != "bfloat16":
    raise SetupError(f"model.attention_impl='cudnn' runs bf16 attention only, and model.dtype is "
                     f"{model.dtype!r}: set model.dtype='bfloat16', or use 'xla'")
  return impl


def refuse_mit_settings(model: ConfigDict) -> None:
  """Refuses the MiT-only settings changed from their defaults where the backbone is another (a
  ResNet, MobileNetV2): they would be ignored without a word."""
  defaults = base_config().model
  for field in ("scan_blocks", "attention_impl"):
    default = defaults[field]
    if model[field] != default:
      raise SetupError(f"model.{field}={model[field]!r} is a MiT setting, and model.backbone "
                       f"{model.backbone!r} is not a MiT: leave it at {default!r}")
  for name, value in model.backbone_overrides.items():
    if value:
      raise SetupError(f"model.backbone_overrides.{name}={tuple(value)} is a MiT setting, and "
                       f"model.backbone {model.backbone!r} is not a MiT: leave it at ()")


def build_segformer(model: ConfigDict, num_classes: int) -> SegFormer:
  head = SegFormerHead(num_classes=num_classes, embed_dim=model.decoder_dim,
                       dropout_rate=model.dropout_rate, dtype=compute_dtype(model))
  return SegFormer(backbone=build_backbone(model), decode_head=head)


class SegFormerMethod(Method):
  """Trains on single frames (or every frame of a clip); predicts frame by frame."""

  predicts_frames_alone = True
  sliding_window_inference = True

  def __init__(self, config: ConfigDict):
    super().__init__(config)
    self.module = build_segformer(config.model, self.num_classes)
    self._dtype = compute_dtype(config.model)
    self._predict_logits = jax.jit(self._predict_logits_impl)

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
    logits = losses.logits_at_label_size(logits, labels)
    loss = losses.segmentation_cross_entropy(
        logits, labels, average=self.config.method.loss_average)
    metrics = {"loss": loss, "pixel_acc": losses.pixel_accuracy(logits, labels)}
    return loss, (metrics, dict(new_state))

  def _predict_logits_impl(self, variables, frames):
    return self._logits(variables, frames, train=False)

  def predictor(self, variables: Variables) -> PerFramePredictor:
    return PerFramePredictor(self._predict_logits, variables, self.config.data.eval_transform,
                             windows=self.sliding_windows)
