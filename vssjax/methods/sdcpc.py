"""SD-CPC (Cen et al., arXiv 2412.08034 / Neural Networks 2025): a backbone + `SDCPCHead` on clips
[t-9, t-6, t-3, t], trained with cross-entropy and MCP-CL.

The paper body was not available (specs/sdcpc.md §0): module names, roles and the headline numbers
follow the paper; every design detail is the spec's §6 reconstruction, with the unknowns as config
knobs (vssjax/models/sdcpc_head.py and sdcpc_prototypes.py say which is which).

Loss [GUESS, spec §6.3]: CE of the final prediction on the target
+ `frame_loss_weight` x CE of the SegFormer branch on every frame (on the target only with
`method.frame_loss_target_only`, for sparsely labelled sets) + `mcp.weight` x MCP-CL
+ `mcp.separation_weight` x the prototype separation term (off by default).
Backbone: a MiT variant ('b0'..'b5') or a dilated ResNet ('r18', 'r50', 'r101').
Inference: DTERN's streaming predictor (backbone, SegFormer branch and SSEA once per frame, their
results kept; DSSA per clip; past frames only; with DTERN's offsets, frames 0-2 of a video use
the SegFormer branch alone).
"""

from __future__ import annotations

import jax

from vssjax.configs_lib import ConfigDict
from vssjax.errors import SetupError
from vssjax.methods.backbones import OWN, build_backbone, compute_dtype, resolve_dwconv_impl
from vssjax.methods.dtern import DTERNMethod
from vssjax.models.clip_segmentor import ClipSegmentor
from vssjax.models.sdcpc_head import DIFFERENCES, WINDOW_CENTRES, SDCPCHead
from vssjax.models.sdcpc_prototypes import GROUPINGS, PROTOTYPE_PIXELS, mcp_cl_loss
from vssjax.ops.resize import resize_bilinear


def _check_dssa(dssa: ConfigDict) -> None:
  """DSSA's settings, checked as the method is built rather than where the attention first
  traces: its keep ratios are fractions of the cells or window keys, a window is centred on
  the query pixel, so its side is odd, and its static difference is one it knows; windows at the
  coarse stage's cells lie in the 3 x 3 cells around and hold a pixel of the map, so their radius
  is a cell's side or one less."""
  if dssa.difference not in DIFFERENCES:
    raise SetupError(f"model.dssa.difference must be one of {DIFFERENCES}, got "
                     f"{dssa.difference!r}")
  for name in ("keep_ratio", "window_keep_ratio"):
    if not 0.0 < dssa[name] <= 1.0:
      raise SetupError(f"model.dssa.{name}={dssa[name]}: a fraction in (0, 1]")
  if dssa.window < 1 or dssa.window % 2 == 0:
    raise SetupError(f"model.dssa.window={dssa.window}: the window is centred on its pixel, so "
                     "its side must be a positive odd number")
  if dssa.coarse_factor < 1:
    raise SetupError(f"model.dssa.coarse_factor={dssa.coarse_factor}: at least 1")
  if dssa.window_centre not in WINDOW_CENTRES:
    raise SetupError(f"model.dssa.window_centre must be one of {WINDOW_CENTRES}, got "
                     f"{dssa.window_centre!r}")
  if (dssa.window_centre == "coarse_argmax"
      and not dssa.coarse_factor - 1 <= dssa.window // 2 <= dssa.coarse_factor):
    raise SetupError(
        f"model.dssa.window={dssa.window} with window_centre='coarse_argmax': its radius must be "
        f"model.dssa.coarse_factor={dssa.coarse_factor} or one less (a window displaced to a "
        "coarse cell stays in the cells around it and, in a cell the map cuts short, holds a "
        f"pixel of the map): window {2 * dssa.coarse_factor - 1} or {2 * dssa.coarse_factor + 1}")


def _check_heads(model: ConfigDict) -> None:
  """SSEA's and DSSA's attentions split the head's `decoder_dim` channels into equal heads;
  checked as the model is built, rather than where the first trace reshapes them."""
  for name in ("ssea", "dssa"):
    heads = model[name].num_heads
    if heads < 1 or model.decoder_dim % heads:  # an int: the config's type check
      raise SetupError(f"model.{name}.num_heads={heads!r}: the attention heads split "
                       f"model.decoder_dim={model.decoder_dim} channels equally, so a positive "
                       "divisor of it")


def build_sdcpc(model: ConfigDict, num_classes: int, *,
                embed_references: bool = False) -> ClipSegmentor:
  """`backbone` + `decode_head` (an `SDCPCHead`, embedding the reference frames too with
  `embed_references`), with DTERN's extract/decode split. DSSA's and the attention heads'
  settings are checked here only: the methods are how models are built."""
  backbone = build_backbone(model, "SD-CPC", ("mit", "resnet", OWN))
  _check_dssa(model.dssa)
  _check_heads(model)
  head = SDCPCHead(
      num_classes=num_classes, embed_dim=model.decoder_dim, dropout_rate=model.dropout_rate,
      ssea_levels=tuple(model.ssea.levels), ssea_pool_sizes=tuple(model.ssea.pool_sizes),
      ssea_heads=model.ssea.num_heads, dssa_coarse_factor=model.dssa.coarse_factor,
      dssa_keep_ratio=model.dssa.keep_ratio, dssa_window=model.dssa.window,
      dssa_window_keep_ratio=model.dssa.window_keep_ratio, dssa_heads=model.dssa.num_heads,
      embedding_dim=model.embedding_dim,
      dwconv_impl=resolve_dwconv_impl(model), dtype=compute_dtype(model),
      ssea_token_embedding=model.ssea.token_embedding, ssea_context_norm=model.ssea.context_norm,
      dssa_difference_gate=model.dssa.difference_gate, dssa_difference=model.dssa.difference,
      dssa_window_centre=model.dssa.window_centre, embed_references=embed_references)
  return ClipSegmentor(backbone=backbone, decode_head=head)


def _check_mcp(method: ConfigDict) -> None:
  """MCP-CL's settings (`method.mcp`), checked as the method is built: the loss would otherwise
  meet an unknown pixel rule or no prototype only in the first trace, and a temperature of 0 makes
  its InfoNCE NaN, which the trainer reports as divergence. A separation term needs prototypes
  that carry gradient: it would otherwise train nothing. Prototypes per frame of correctly
  predicted pixels need labelled references: they would otherwise all be the targets'."""
  mcp = method.mcp
  for name, allowed in (("prototype_pixels", PROTOTYPE_PIXELS), ("grouping", GROUPINGS)):
    if mcp[name] not in allowed:
      raise SetupError(f"method.mcp.{name} must be one of {allowed}, got {mcp[name]!r}")
  for name, least in (("prototypes_per_class", 1), ("max_pixels_per_class", 1),
                      ("kmeans_iters", 0)):
    if mcp[name] < least:
      raise SetupError(f"method.mcp.{name}={mcp[name]}: at least {least}")
  if mcp.temperature <= 0:
    raise SetupError(f"method.mcp.temperature={mcp.temperature}: InfoNCE's temperature must be "
                     "positive")
  if mcp.separation_weight < 0:
    raise SetupError(f"method.mcp.separation_weight={mcp.separation_weight}: at least 0")
  if mcp.separation_weight and not mcp.prototype_gradient:
    raise SetupError(f"method.mcp.separation_weight={mcp.separation_weight} moves the prototypes, "
                     "which carry no gradient with method.mcp.prototype_gradient=False: set it "
                     "True, or the weight to 0")
  if (mcp.grouping == "frames" and mcp.prototype_pixels == "correct"
      and method.frame_loss_target_only):
    raise SetupError("method.mcp.grouping='frames' with prototype_pixels='correct' takes the "
                     "reference frames' correctly predicted pixels, and their frames are "
                     "unlabelled (method.frame_loss_target_only=True): every reference "
                     "prototype would be its class's target mean; use "
                     "prototype_pixels='predicted'")


class SDCPCMethod(DTERNMethod):
  """DTERN's clip handling and streaming predictor with SD-CPC's network and losses."""
  display_name = "SD-CPC"

  def __init__(self, config: ConfigDict):
    super().__init__(config)
    _check_mcp(config.method)

  def build_module(self, model: ConfigDict) -> ClipSegmentor:
    return build_sdcpc(model, self.num_classes,
                       embed_references=self.config.method.mcp.grouping == "frames")

  def loss_and_metrics(self, params, model_state, batch, rng):
    dropout_rng, sample_rng = jax.random.split(rng)
    outputs, new_state = self._apply(
        {"params": params, **model_state}, batch["frames"], train=True,
        rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
    method = self.config.method
    labels = batch["labels"]
    loss_final, pixel_acc = self._cross_entropy(outputs["final"], labels[:, -1])
    loss_frames = self._frame_loss(outputs["frame_logits"], labels)
    mcp = method.mcp
    references = None
    if mcp.grouping == "frames":  # each reference predicted by the SegFormer branch, on c2's grid
      grid = outputs["embedding"].shape[1:3]
      references = (outputs["reference_embedding"],
                    resize_bilinear(outputs["frame_logits"][:, :-1], grid, align_corners=False),
                    labels[:, :-1])
    contrast = mcp_cl_loss(
        outputs["embedding"], outputs["final"], labels[:, -1], sample_rng,
        num_prototypes=mcp.prototypes_per_class, temperature=mcp.temperature,
        kmeans_iters=mcp.kmeans_iters, prototype_pixels=mcp.prototype_pixels,
        max_pixels_per_class=mcp.max_pixels_per_class, prototype_gradient=mcp.prototype_gradient,
        grouping=mcp.grouping, separation=mcp.separation_weight > 0, references=references)
    loss = (loss_final + method.frame_loss_weight * loss_frames
            + mcp.weight * contrast["loss_contrast"]
            + mcp.separation_weight * contrast.get("loss_separation", 0.0))
    metrics = {"loss": loss, "loss_final": loss_final, "loss_frames": loss_frames, **contrast,
               "pixel_acc": pixel_acc}
    return loss, (metrics, dict(new_state))
