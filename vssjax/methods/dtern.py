"""DTERN (ICCV 2025): MiT backbone + `DTERNHead` on 4-frame clips [t-9, t-6, t-3, t].

Training (specs/dtern.md §6): 0.5 x CE of the SegFormer branch on every frame (on the target
only with `method.frame_loss_target_only`, the Cityscapes rule) + 0.5 x CE of the final and
GTEM outputs on the target. Inference: a streaming predictor that runs the backbone once per frame
and caches the features the next clips need (the release recomputes them; the outputs are the
same, see tests/methods/test_dtern.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines.clip_sampling import OffsetClipSampler
from data_pipelines.eval_transforms import eval_resize
from vssjax.configs_lib import ConfigDict
from vssjax.errors import SetupError
from vssjax.methods import losses
from vssjax.methods.backbones import OWN, build_backbone, compute_dtype, resolve_dwconv_impl
from vssjax.methods.base import Batch, Method, Prediction, StreamingPredictor, Variables
from vssjax.methods.per_frame import frame_labels
from vssjax.methods.streamed_frames import OutputsOf, StreamedFrame, StreamedVideo
from vssjax.methods.variables_read import ProgramOnPart
from vssjax.models.clip_segmentor import ClipSegmentor
from vssjax.models.dtern_head import DTERNHead, LTEM_HEADS
from vssjax.models.layers import flatten_time, normalize_images

def build_dtern(model: ConfigDict, num_classes: int) -> ClipSegmentor:
  backbone = build_backbone(model, "DTERN", ("mit", OWN))
  kernels = tuple(model.cam_kernels)
  if not kernels or any(k < 1 or k % 2 == 0 for k in kernels):
    # CAM sums its depth-wise convs as one kernel centred on the pixel: each needs a centre tap.
    raise SetupError(f"model.cam_kernels={kernels}: CAM's depth-wise kernel sizes, one or more, "
                     "each positive and odd (centred on their pixel)")
  if model.decoder_dim % math.lcm(*LTEM_HEADS):
    # Checked as the model is built rather than where the first trace splits the channels.
    raise SetupError(f"model.decoder_dim={model.decoder_dim}: the LTEM layers split it into "
                     f"{LTEM_HEADS} attention heads, so a multiple of {math.lcm(*LTEM_HEADS)}")
  head = DTERNHead(num_classes=num_classes, num_clusters=model.num_clusters,
                   kernels=kernels, embed_dim=model.decoder_dim,
                   dropout_rate=model.dropout_rate, dwconv_impl=resolve_dwconv_impl(model),
                   dtype=compute_dtype(model))
  return ClipSegmentor(backbone=backbone, decode_head=head)


def _prediction_logits(outputs: dict[str, jax.Array]) -> jax.Array:
  """The final map for full clips, the SegFormer branch of the target for single frames."""
  return outputs["final"] if "final" in outputs else outputs["frame_logits"][:, -1]


class DTERNMethod(Method):
  """Trains on clips whose last frame is the target; predicts from past frames only.

  Other clip methods on a backbone + video head (SD-CPC) subclass it and override
  `build_module` (and the loss); `display_name` names them in errors.
  """
  display_name = "DTERN"
  module_takes_clips = True

  def __init__(self, config: ConfigDict):
    super().__init__(config)
    self.module = self.build_module(config.model)
    self._dtype = compute_dtype(config.model)
    self.sampler = OffsetClipSampler(tuple(int(o) for o in config.clip.offsets))
    if max(self.sampler.offsets) > 0:
      raise SetupError(f"{self.display_name} predicts from past frames; clip.offsets "
                       f"{self.sampler.offsets} must all be <= 0")
    # The streaming predictor's programs, each passed only the part of the variables it reads
    # (the decoder's: the head's temporal layers), in the dtypes it reads them:
    # `vssjax/methods/variables_read.py` says why. `clip_logits`, the release's recomputation of
    # a whole clip (`cache_features=False`), computes frame outputs it drops, so it reads all.
    self.encode_frame = ProgramOnPart(self._encode_frame_impl)
    self.decode_states = ProgramOnPart(self._decode_states_impl)
    self.clip_logits = jax.jit(self._clip_logits_impl)

  def build_module(self, model: ConfigDict) -> ClipSegmentor:
    return build_dtern(model, self.num_classes)

  @property
  def warm_up_frames(self) -> int:
    """The frames that bring up every clip length, whose programs differ (4 with DTERN's offsets:
    the first three predict from the frame alone)."""
    return self.sampler.frames_to_every_eval_clip_length()

  def _apply(self, variables: Variables, frames: jax.Array, *, method=None, **kwargs):
    images = normalize_images(frames, self._dtype)
    return self.module.apply(variables, images, method=method, **kwargs)

  def init(self, rng: jax.Array, batch: Batch) -> Variables:
    if batch["frames"].shape[1] < 2:
      raise SetupError(f"{self.display_name} trains on clips (clip.kind='offsets'), got single "
                       "frames")
    images = normalize_images(batch["frames"], self._dtype)
    return dict(self.module.init({"params": rng}, images, train=False))

  def loss_and_metrics(self, params, model_state, batch, rng):
    outputs, new_state = self._apply(
        {"params": params, **model_state}, batch["frames"], train=True,
        rngs={"dropout": rng}, mutable=["batch_stats"])
    labels = batch["labels"]
    loss_frames = self._frame_loss(outputs["frame_logits"], labels)
    # The release's one cross-entropy over [final; class logits], the target's labels twice: both
    # halves have the same divisor, so it is the mean of the two.
    loss_final, pixel_acc = self._cross_entropy(outputs["final"], labels[:, -1])
    loss_class, _ = self._cross_entropy(outputs["class_logits"], labels[:, -1])
    loss_target = 0.5 * (loss_final + loss_class)
    loss = 0.5 * loss_frames + 0.5 * loss_target
    metrics = {"loss": loss, "loss_frames": loss_frames, "loss_target": loss_target,
               "pixel_acc": pixel_acc}
    return loss, (metrics, dict(new_state))

  def _frame_loss(self, frame_logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The per-frame branch's cross-entropy: over every frame, or the target only on sparsely
    labelled sets (`method.frame_loss_target_only`)."""
    if self.config.method.frame_loss_target_only:
      frame_logits, labels = frame_logits[:, -1], labels[:, -1]
    else:
      frame_logits, labels = flatten_time(frame_logits), flatten_time(labels)
    return self._cross_entropy(frame_logits, labels)[0]

  def _cross_entropy(self, logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(cross-entropy, pixel accuracy) at label size, averaged as the config says."""
    return losses.cross_entropy_at_label_size(
        logits, labels, average=self.config.method.loss_average)

  def _encode_frame_impl(self, variables, frames):
    return self._apply(variables, frames, method=ClipSegmentor.encode_frame)

  def _decode_states_impl(self, variables, target_state, clip_references):
    """The final logits of a clip from its target's own `encode_frame` state and the list of its
    frames' reference states (target last)."""
    references = {key: jnp.stack([state[key] for state in clip_references], axis=1)
                  for key in clip_references[0]}
    return self.module.apply(variables, target_state, references,
                             method=ClipSegmentor.decode_states)

  def _clip_logits_impl(self, variables, frames):
    return _prediction_logits(self._apply(variables, frames, train=False))

  def streamed_frames(self, variables: Variables, frames, outputs_of: OutputsOf
                      ) -> StreamedVideo:
    """A video frame once the predictor's clips are full ('stream_frame'): the backbone and the
    head's per-frame layers on the new frame ('stream_encode'), then the head's temporal part on
    its state and the kept states of the clip's frames, the new one last ('stream_decode'). The
    bench's `forward` rows instead run the whole network on every frame of the clip, as the
    release does."""
    target, reference = outputs_of("stream_encode", self.encode_frame, frames)
    references = [reference] * len(self.sampler.offsets)
    encode_frame, decode_states = (program.bound(variables)
                                   for program in (self.encode_frame, self.decode_states))

    def stream_frame():
      new_target, new_reference = encode_frame(frames)
      return decode_states(new_target, references[:-1] + [new_reference])  # the new frame last

    return StreamedVideo([StreamedFrame(
        "stream_frame",
        {"stream_encode": (self.encode_frame, (frames,)),
         "stream_decode": (self.decode_states, (target, references))},
        stream_frame, 1.0)])

  def predictor(self, variables: Variables, *, cache_features: bool = True
                ) -> "DTERNPredictor":
    return DTERNPredictor(self, variables, cache_features=cache_features)


class DTERNPredictor(StreamingPredictor):
  """Predicts frame t from the clip `eval_indices(t)` of past frames, answering at once.

  With `cache_features` (default) each frame goes through the backbone and the head's per-frame
  layers once (`DTERNMethod.encode_frame`): what its own prediction needs is used at once, and
  what later clips need of it (DTERN's LTEM centers, SD-CPC's static feature) is kept for as long
  as a later clip can use it. Without it every clip re-runs the whole network on all its frames,
  as the release does. The two agree up to float rounding (eval mode: BatchNorm treats every frame
  alike). With DTERN's offsets (-9, -6, -3, 0), frames 0-2 use the SegFormer branch alone; other
  offsets clamp a clip into the video (`OffsetClipSampler.eval_indices`).
  """

  def __init__(self, method: DTERNMethod, variables: Variables, *, cache_features: bool = True):
    self._method = method
    self._variables = variables
    self._encode_frame = method.encode_frame.bound(variables)  # each on the part it reads
    self._decode_states = method.decode_states.bound(variables)
    self._cache_features = cache_features
    self._eval_transform = method.config.data.eval_transform
    self._sampler = method.sampler
    self._memory: dict[int, object] = {}  # frame index -> reference state or resized frame
    self._index = 0

  def push(self, frame: np.ndarray) -> list[Prediction]:
    t, self._index = self._index, self._index + 1
    resized = eval_resize(frame, self._eval_transform)
    target_state = None
    if self._cache_features:
      target_state, self._memory[t] = self._encode_frame(resized[None])
    else:
      self._memory[t] = resized
    # The video's length is unknown while streaming; past-only clips never need it.
    indices = self._sampler.eval_indices(t + 1, t)
    missing = [i for i in indices if i not in self._memory]
    if missing:
      raise RuntimeError(f"frame {t}: clip {indices} needs dropped frames {missing}")
    logits = self._predict_logits(target_state, [self._memory[i] for i in indices])
    labels = frame_labels(logits, input_hw=resized.shape[:2], frame_hw=frame.shape[:2])
    self._forget_before(t + 1 + min(self._sampler.offsets))
    return [(t, labels)]

  def _predict_logits(self, target_state: dict | None, clip: Sequence) -> jax.Array:
    if not self._cache_features:
      return self._method.clip_logits(self._variables, np.stack(clip)[None])
    if len(clip) == 1:  # the release's early exit: the SegFormer branch of the frame
      return target_state["logits"]
    return self._decode_states(target_state, clip)

  def _forget_before(self, first_needed: int) -> None:
    for i in [i for i in self._memory if i < first_needed]:
      del self._memory[i]
