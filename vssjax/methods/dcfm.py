"""DCFM (TCSVT 2024): symmetric training on frame pairs, keyframe streaming at test time.

Training (specs/dcfm.md §4): one encoder pass on [x_U; x_L] (neighbour, labelled frame); the
labelled frame is decoded as a keyframe (with its own common feature) and as a non-key frame (with
the neighbour's); the neighbour is decoded as a keyframe only to build the consistency term:

  L = CE(P_L) + lambda * CE(P_L|U) + beta * mean(M * (F^_L - F^_U)^2),
  M = [argmax P_L == argmax P_U] on the low-resolution logits (train mode, no gradient through M),

the mean running over all b*d*h*w elements and gradients reaching both frames. The FFM and head
run three times each, each with its own BatchNorm batch statistics, in the release's order (FFM:
key L, key U, non-key L; head: non-key L, key L, key U), which orders the running-statistic
updates. For the loss ablations of Tables VI and VII (specs/dcfm.md §8), `method.key_weight`
weighs CE(P_L) (1; 0 drops it), `method.segmentation_loss='ohem'` takes the release's
`OhemCELoss2D` for both CE terms ('ce_dice': CE + a soft Dice loss), and
`method.consistency_distance='l1'` takes |.| in place of the square ('mse', the release's);
Table V's `model.left_out` leaves a path's common or independent feature out.

Inference (§3, §5): `DCFMPredictor` runs the whole network on keyframes only and just the shallow
prefix on the others, fusing them with the cached common feature of the previous keyframe (P mode)
or of the previous and next ones, logits summed (B mode). Adaptive keyframe scheduling (AKS)
stretches the interval while the frame stays close to the last keyframe. With h-flip
test-time augmentation (`method.eval_flip`, the release's `use_flip`, §6.2) the mirrored video
runs alongside as a second batch row, its non-key frames fused with its own mirrored keyframes,
and each frame's logits are summed with its mirror image's, mirrored back.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines.clip_sampling import check_label_window, dcfm_first_keyframe
from data_pipelines.eval_transforms import eval_resize
from vssjax.configs_lib import ConfigDict
from vssjax.errors import SetupError
from vssjax.methods import losses
from vssjax.methods.backbones import (backbone_family, build_mit, compute_dtype,
                                      refuse_dwconv_impl, remat_policy_name)
from vssjax.methods.base import Batch, Method, Prediction, StreamingPredictor, Variables
from vssjax.methods.per_frame import frame_labels
from vssjax.methods.streamed_frames import OutputsOf, StreamedFrame, StreamedVideo
from vssjax.methods.variables_read import ProgramOnPart
from vssjax.models.dcfm import DCFM, FEATURES, MiTCommonEncoder, PSPCommonEncoder
from vssjax.models.layers import (IMAGENET_STD, flatten_time, normalize_images, torch_kernel_init,
                                  unflatten_time)
from vssjax.models.ppm import PPM
from vssjax.models.resnet import RESNET_NAMES, resnet
from vssjax.models.segformer_head import SegFormerHead


def build_dcfm(model: ConfigDict, num_classes: int) -> DCFM:
  """DCFM on `model.backbone`: a MiT variant ('b0'..'b5') or a dilated ResNet
  ('r18'|'r50'|'r101').

  `model.common_dim` is the release's `bot_ch`, d: a positive width adds the 1x1 conv `bot_aspp`
  from the encoder's output to d channels; 0 leaves the common feature at the encoder's own width
  (decoder_dim on MiT, the PPM's 4096 or 1024 on ResNet), as every released MiT config does
  (specs/dcfm.md §1.1-1.2). `model.shallow_blocks` picks the MiT split point; ResNet's is
  layer1, so there it stays at 1.
  """
  dtype = compute_dtype(model)
  if model.common_dim < 0:
    raise SetupError(f"model.common_dim={model.common_dim}: the width d of the 1x1 conv to the "
                     "common feature, or 0 for none")
  if backbone_family(model, "DCFM", ("mit", "resnet")) == "mit":
    backbone = build_mit(model, "DCFM")
    if not 0 <= model.shallow_blocks <= backbone.depths[0]:
      raise SetupError(f"model.shallow_blocks={model.shallow_blocks}: the stage-1 blocks of the "
                       f"shallow prefix, from 0 to the {backbone.depths[0]} of "
                       f"model.backbone {model.backbone!r}")
    encoder = MiTCommonEncoder(
        backbone=backbone,
        decoder=SegFormerHead(num_classes=0, embed_dim=model.decoder_dim, dtype=dtype),
        shallow_blocks=model.shallow_blocks, dropout_rate=model.dropout_rate)
    encoder_dim = model.decoder_dim
    shallow_dim = backbone.embed_dims[0]
  else:
    refuse_dwconv_impl(model, f"DCFM on {model.backbone!r}")
    if model.shallow_blocks != 1:
      raise SetupError(f"model.shallow_blocks={model.shallow_blocks} splits a MiT's stage 1, and "
                       f"model.backbone {model.backbone!r} is not a MiT (its shallow prefix "
                       "ends at layer1): leave it at 1")
    backbone = resnet(RESNET_NAMES[model.backbone], dtype=dtype, remat=remat_policy_name(model))
    width = backbone.out_features[-1]  # c4's: 512 (ResNet-18) or 2048
    # semseg's PSPNet leaves its PPM convs at PyTorch's default init, and DCFM's
    # `initialize_weights` covers only bot_aspp, ffm and final (specs/dcfm.md §2.1).
    ppm = PPM(features=width // 4, dtype=dtype, kernel_init=torch_kernel_init)
    encoder = PSPCommonEncoder(backbone=backbone, ppm=ppm)
    encoder_dim = 2 * width  # the PPM's input and its four branches of width / 4
    shallow_dim = backbone.out_features[0]  # layer1
  bottleneck = model.common_dim > 0
  left_out = tuple(model.left_out)
  unknown = sorted(set(left_out) - set(FEATURES))
  if unknown:
    raise SetupError(f"model.left_out names {unknown}: the features a path can leave out are "
                     f"{FEATURES}")
  for path in ("key", "non_key"):
    if {f"{path}_common", f"{path}_independent"} <= set(left_out):
      raise SetupError(f"model.left_out={left_out} leaves the {path} path no feature: its fused "
                       "map would be the FFM's bias, constant, and its predictions its "
                       "classifier's of that (Table V leaves one feature out at a time)")
  return DCFM(encoder=encoder, num_classes=num_classes,
              common_dim=model.common_dim if bottleneck else encoder_dim,
              independent_dim=shallow_dim // 2, bottleneck=bottleneck,
              head_hidden=model.head_hidden, dropout_rate=model.dropout_rate, dtype=dtype,
              left_out=left_out)


@dataclasses.dataclass(frozen=True)
class KeyframeSchedule:
  """Fixed interval K, B or P mode, optional AKS (specs/dcfm.md §3, §5)."""
  interval: int = 2  # K (MinK under AKS)
  mode: str = "B"  # 'B': previous + next keyframe; 'P': previous only
  aks: bool = False
  aks_threshold: float = 0.0  # tau on the mean |normalised frame - last keyframe|
  aks_max_interval: int = 5

  def __post_init__(self):
    if self.interval < 1:
      raise SetupError(f"keyframe interval must be >= 1, got {self.interval}")
    if self.mode not in ("B", "P"):
      raise SetupError(f"DCFM mode must be 'B' or 'P', got {self.mode!r}")
    if self.aks and self.aks_max_interval < self.interval:
      raise SetupError(f"aks_max_interval {self.aks_max_interval} < interval {self.interval}")

  @classmethod
  def from_config(cls, method: ConfigDict) -> KeyframeSchedule:
    return cls(int(method.keyframe_interval), method.mode, bool(method.aks),
               float(method.aks_threshold), int(method.aks_max_interval))


CONSISTENCY_DISTANCES = ("mse", "l1")  # L_sc's distance: the release's, Table VII's other
SEGMENTATION_LOSSES = ("ce", "ohem", "ce_dice")  # L_key's, L_nonkey's: the release's, Table VII's


def _check_loss(method: ConfigDict) -> None:
  """The loss's settings, checked as the method is built rather than in the first trace: its
  choices, weights that do not reverse a term, and OHEM's mean, which is over the pixels it
  keeps (`losses.ohem_cross_entropy_at_label_size`), with no 'all' reading."""
  for name, allowed in (("consistency_distance", CONSISTENCY_DISTANCES),
                        ("segmentation_loss", SEGMENTATION_LOSSES)):
    if method[name] not in allowed:
      raise SetupError(f"method.{name} must be one of {allowed}, got {method[name]!r}")
  for name in ("key_weight", "nonkey_weight", "consistency_weight"):
    if method[name] < 0:
      raise SetupError(f"method.{name}={method[name]}: at least 0 (0 drops the term)")
  if method.segmentation_loss == "ohem" and method.loss_average != "valid":
    raise SetupError(f"method.segmentation_loss='ohem' averages over the pixels it keeps: "
                     f"method.loss_average={method.loss_average!r} has no meaning there; use "
                     "'valid'")


class DCFMMethod(Method):
  """Trains on [neighbour, labelled] pairs (clip.kind='pair'); predicts with keyframes."""

  def __init__(self, config: ConfigDict):
    super().__init__(config)
    self.module = build_dcfm(config.model, self.num_classes)
    self._dtype = compute_dtype(config.model)
    self.schedule = KeyframeSchedule.from_config(config.method)
    window = check_label_window(config.data.eval_label_window)
    if config.method.eval_passes < 1:
      raise SetupError(f"method.eval_passes={config.method.eval_passes}: at least 1 pass over "
                       "each video")
    _check_loss(config.method)
    if window and self.schedule.mode == "B" and sum(window) + 1 < self.schedule.interval:
      # The rotated first keyframe runs over 0..K-1: past the window the protocol's keyframe
      # would not exist (the predictor would make the last frame one instead, not the protocol).
      raise SetupError(
          f"DCFM's B-mode keyframe interval K={self.schedule.interval} exceeds the "
          f"{sum(window) + 1}-frame evaluation windows (data.eval_label_window={window}): the "
          f"protocol's rotated first keyframe would fall outside them; use K <= "
          f"{sum(window) + 1} or P mode")
    # The predictor's programs, each passed only the part of the variables it reads, in the
    # dtypes it reads them (`vssjax/methods/variables_read.py` says why). One program for the two
    # of a non-key frame ran 1.8x slower on XLA:CPU (101 against 57 ms at 480x480, DCFM-B2 bf16;
    # 2026-12-06, 2-core CPU: 81-88 against 43-46 ms, and 81-85 with an optimization barrier
    # between its halves, so not a fusion across them: the same 3.85 GFLOPs, 577 against 356 MB
    # accessed). On a GPU, where it would save a launch, the bench's row
    # `non_key_<mode>_one_program` times it (`streamed_frames`).
    self.encode_keyframe = ProgramOnPart(self._encode_keyframe_impl)
    self.encode_shallow = ProgramOnPart(self._encode_shallow_impl)
    self.fused_logits = ProgramOnPart(self._fused_logits_impl)

  def _images(self, frames: jax.Array) -> jax.Array:
    return normalize_images(frames, self._dtype)

  @property
  def non_key_reads_frame(self) -> bool:
    """Whether a non-key frame's own pixels are read: not without its independent feature (Table
    V's `model.left_out`), where its shallow prefix would be computed for nothing (and would read
    variables the logits do not depend on)."""
    return "non_key_independent" not in self.module.left_out

  @property
  def warm_up_frames(self) -> int:
    """2K: the first keyframe comes by frame K - 1 (the protocol's rotation), the next one K
    frames later or, under AKS, by the video's last frame (a candidate that ends a video is one),
    so non-key frames are fused with one keyframe (those before the first; P mode) and with two
    (B mode, between the two)."""
    return 2 * self.schedule.interval

  def init(self, rng: jax.Array, batch: Batch) -> Variables:
    frames = batch["frames"]
    if frames.shape[1] != 2:
      raise SetupError(f"DCFM trains on [neighbour, labelled] pairs (clip.kind='pair'); got "
                       f"clips of {frames.shape[1]} frames")
    return dict(self.module.init({"params": rng}, self._images(frames[:, 1]), train=False))

  def loss_and_metrics(self, params, model_state, batch, rng):
    frames, labels = batch["frames"], batch["labels"][:, 1]
    b = frames.shape[0]
    variables = {"params": params, **model_state}
    both = self._images(flatten_time(frames[:, :2]))  # [x_U0, x_L0, x_U1, ...] (`unflatten_time`)

    def pair(x):  # [2B, ...] -> (x_U's, x_L's)
      pairs = unflatten_time(x, b)
      return pairs[:, 0], pairs[:, 1]

    def forward(module, images):
      common, shallow = module.encode(images, train=True)
      projected_u, projected_l = pair(module.project(common))
      size = projected_u.shape[-3:-1]
      independent_u, independent_l = (
          module.project_independent(s, size, normalize_first=False) for s in pair(shallow))
      # The release's call order, which orders the BatchNorms' running-statistic updates: FFM on
      # the key path of x_L, the key path of x_U, the non-key path of x_L (with x_U's common
      # feature); then the head on the non-key path, x_L's key path, x_U's key path.
      fused_l = module.fuse(projected_l, independent_l, train=True, path="key")
      fused_u = module.fuse(projected_u, independent_u, train=True, path="key")
      fused_lu = module.fuse(projected_u, independent_l, train=True, path="non_key")
      logits_lu, logits_l, logits_u = (module.final(f, train=True)
                                       for f in (fused_lu, fused_l, fused_u))
      return fused_l, logits_l, logits_lu, fused_u, logits_u

    (fused_l, logits_l, logits_lu, fused_u, logits_u), new_state = self.module.apply(
        variables, both, method=forward, rngs={"dropout": rng}, mutable=["batch_stats"])
    method = self.config.method
    # A term weighed 0 (an ablation's, Tables VI-VII) is still logged, but its inputs stop the
    # gradient: its backward pass would only be multiplied by 0.
    logits_l_key, logits_lu, fused_l_sc, fused_u_sc = (
        jax.lax.stop_gradient(x) if weight == 0 else x for x, weight in (
            (logits_l, method.key_weight), (logits_lu, method.nonkey_weight),
            (fused_l, method.consistency_weight), (fused_u, method.consistency_weight)))
    cross_entropy = functools.partial(losses.cross_entropy_at_label_size,
                                      average=method.loss_average)
    if method.segmentation_loss == "ohem":
      segmentation_loss = losses.ohem_cross_entropy_at_label_size
    elif method.segmentation_loss == "ce_dice":
      def segmentation_loss(logits, labels):  # Table VII's sum, 1:1
        loss, pixel_acc = cross_entropy(logits, labels)
        return loss + losses.dice_loss_at_label_size(logits, labels), pixel_acc
    else:
      segmentation_loss = cross_entropy
    loss_key, pixel_acc = segmentation_loss(logits_l_key, labels)
    loss_nonkey, _ = segmentation_loss(logits_lu, labels)
    agree = jnp.argmax(logits_l, axis=-1) == jnp.argmax(logits_u, axis=-1)
    diff = (fused_l_sc.astype(jnp.float32) - fused_u_sc.astype(jnp.float32)) * agree[..., None]
    distance = jnp.square if method.consistency_distance == "mse" else jnp.abs
    loss_consistency = jnp.mean(distance(diff))
    loss = (method.key_weight * loss_key + method.nonkey_weight * loss_nonkey
            + method.consistency_weight * loss_consistency)
    metrics = {"loss": loss, "loss_key": loss_key, "loss_nonkey": loss_nonkey,
               "loss_consistency": loss_consistency, "mask_fraction": agree.mean(),
               "pixel_acc": pixel_acc}
    return loss, (metrics, dict(new_state))

  # Inference pieces, each one compiled program (the predictor never calls the deep part on a
  # non-key frame: `encode_shallow` contains only the shallow prefix).
  def _encode_keyframe_impl(self, variables, frames):
    """-> (projected common feature, key-mode logits) of a keyframe."""
    def keyframe(module, images):
      common, shallow = module.encode(images, train=False)
      projected = module.project(common)
      return projected, module.decode(projected, shallow, train=False, normalize_first=True)[1]
    return self.module.apply(variables, self._images(frames), method=keyframe)

  def _encode_shallow_impl(self, variables, frames):
    return self.module.apply(variables, self._images(frames), train=False, method=DCFM.shallow)

  def _fused_logits_impl(self, variables, projected_commons, shallow):
    """Sum over the given keyframes' projected common features of the non-key logits (eqs. 6-7)."""
    return self.module.apply(variables, projected_commons, shallow, method=DCFM.non_key_logits)

  def streamed_frames(self, variables: Variables, frames, outputs_of: OutputsOf
                      ) -> StreamedVideo:
    """A keyframe ('keyframe': the whole network, the projected common feature and the logits)
    and a non-key frame ('non_key_<mode>': the shallow prefix, then the fusion with the keyframes'
    features, 2 in B mode and 1 in P mode), one in K and K - 1 in K of a video's frames; and the
    non-key frame as one program (`_non_key_frame_as_one_program`: an A/B, not what the predictor
    runs)."""
    projected, _ = outputs_of("keyframe", self.encode_keyframe, frames)
    commons = [projected] * (2 if self.schedule.mode == "B" else 1)
    reads_frame = self.non_key_reads_frame
    shallow = outputs_of("non_key_shallow", self.encode_shallow, frames) if reads_frame else None
    one_program = _non_key_frame_as_one_program(self)
    encode_keyframe, encode_shallow, fused_logits, non_key_frame = (
        program.bound(variables) for program in
        (self.encode_keyframe, self.encode_shallow, self.fused_logits, one_program))
    k, non_key = self.schedule.interval, f"non_key_{self.schedule.mode}"
    return StreamedVideo([
        StreamedFrame("keyframe", {"keyframe": (self.encode_keyframe, (frames,))},
                      lambda: encode_keyframe(frames), 1 / k),
        StreamedFrame(non_key, {**({"non_key_shallow": (self.encode_shallow, (frames,))}
                                   if reads_frame else {}),
                                "non_key_fuse": (self.fused_logits, (commons, shallow))},
                      lambda: fused_logits(commons, encode_shallow(frames) if reads_frame
                                           else None), (k - 1) / k),
        StreamedFrame(f"{non_key}_one_program",
                      {f"{non_key}_one_program": (one_program, (commons, frames))},
                      lambda: non_key_frame(commons, frames), 0.0),
    ], average_row=f"video_avg_K{k}")

  def predictor(self, variables: Variables, *, first_keyframe: int = 0) -> DCFMPredictor:
    return DCFMPredictor(self, variables, self.schedule, first_keyframe)

  def video_predictors(self, variables: Variables, protocol_index: int
                       ) -> list[DCFMPredictor]:
    """The protocol's passes (`method.eval_passes`), each starting at its rotated keyframe."""
    passes = int(self.config.method.eval_passes)
    rotate = self.schedule.mode == "B"
    return [self.predictor(variables, first_keyframe=dcfm_first_keyframe(
        protocol_index, p, self.schedule.interval, passes, rotate)) for p in range(passes)]


def _non_key_frame_as_one_program(method: DCFMMethod) -> ProgramOnPart:
  """A non-key frame as one program, `(part, projected commons, frames) -> logits`: the shallow
  prefix and the fusion that the predictor runs as two (B mode computes the prefix when the frame
  comes and fuses it when the next keyframe does). The bench's A/B of one launch against two
  (`DCFMMethod.__init__` says what XLA:CPU made of it)."""

  def non_key_frame(part, keyframes, images):
    shallow = method.encode_shallow.fn(part, images) if method.non_key_reads_frame else None
    return method.fused_logits.fn(part, keyframes, shallow)

  return ProgramOnPart(non_key_frame)


@jax.jit
def _sum_mirrored(logits: jax.Array) -> jax.Array:
  """Logits [2, h, w, C] of [frame, mirror image] -> [1, h, w, C]: the frame's plus the mirror
  image's mirrored back (the release's `cal_flip`). The release sums after upsampling to the
  output size; bilinear upsampling with half-pixel centres is linear and commutes with the mirror,
  so summing before it gives the same logits up to float rounding, at a fraction of the cost."""
  return logits[:1] + logits[1:, :, ::-1]


@dataclasses.dataclass
class _Keyframe:
  index: int
  projected: jax.Array  # its common feature's share of the FFM conv
  image: np.ndarray  # resized frame, for the AKS score


@dataclasses.dataclass
class _Pending:
  index: int
  resized: np.ndarray
  frame_hw: tuple[int, int]
  shallow: jax.Array | None  # None: not read (`DCFMMethod.non_key_reads_frame`)


class DCFMPredictor(StreamingPredictor):
  """Keyframe streaming over one video (specs/dcfm.md §3, Algorithm 1 of §5).

  Frame t is a keyframe when t == first_keyframe, or, after keyframe k, when t == k + K (fixed
  schedule) or, under AKS, at the first t >= k + K whose score reaches tau, whose interval reaches
  the maximum, or that ends the video. Non-key frames wait for the next keyframe in B mode (and
  frames before the first keyframe always do; in P mode under AKS a candidate waits one frame, in
  case it ends the video); at the end of the video the waiting ones use the previous keyframe
  alone (a video that ends before its first keyframe makes its last frame the keyframe). Only the
  last keyframe's (projected) common feature is kept. `keyframes()` lists the keyframe indices
  chosen so far. With `method.eval_flip` every network call takes [frame, mirror image] and the
  two rows' logits are summed (module docstring).
  """

  def __init__(self, method: DCFMMethod, variables: Variables, schedule: KeyframeSchedule,
               first_keyframe: int = 0):
    if not 0 <= first_keyframe < schedule.interval:
      raise ValueError(f"first keyframe {first_keyframe} must be in [0, {schedule.interval})")
    self._method = method
    # The programs on the parts of the variables they read, per argument signature.
    self._encode_keyframe = method.encode_keyframe.bound(variables)
    self._encode_shallow = method.encode_shallow.bound(variables)
    self._fused_logits = method.fused_logits.bound(variables)
    self._schedule = schedule
    self._first = first_keyframe
    self._eval_transform = method.config.data.eval_transform
    self._flip = bool(method.config.method.eval_flip)
    self._previous: _Keyframe | None = None
    self._pending: list[_Pending] = []
    self._index = 0
    self._keyframes: list[int] = []

  def push(self, frame: np.ndarray) -> list[Prediction]:
    t, self._index = self._index, self._index + 1
    resized = eval_resize(frame, self._eval_transform)
    ready = self._answer_held()
    if self._is_keyframe(t, resized):
      return ready + self._keyframe(t, resized, frame.shape[:2])
    shallow = (self._encode_shallow(self._network_input(resized))
               if self._method.non_key_reads_frame else None)
    waiting = _Pending(t, resized, frame.shape[:2], shallow)
    if not self._waits(t):
      return ready + [self._predict(waiting, [self._previous])]
    self._pending.append(waiting)
    return ready

  def keyframes(self) -> list[int]:
    return list(self._keyframes)

  def flush(self) -> list[Prediction]:
    ready = []
    if self._pending and self._previous is None:
      # The video ended before its first keyframe (one rotated past a short video's end, or a
      # short shot's, `ShotPredictor`): its last frame, the nearest, becomes the keyframe.
      last = self._pending.pop()
      ready = self._keyframe(last.index, last.resized, last.frame_hw)
    elif self._pending and self._schedule.aks:
      # AKS stops stretching at the last frame: it becomes the keyframe if it is a candidate.
      last = self._pending[-1]
      if last.index - self._previous.index >= self._schedule.interval:
        self._pending.pop()
        ready = self._keyframe(last.index, last.resized, last.frame_hw)
    keyframes = [self._previous] if self._previous is not None else []
    ready += [self._predict(waiting, keyframes) for waiting in self._pending]
    self._pending = []
    return ready

  def _waits(self, t: int) -> bool:
    """Whether non-key frame t waits: before the first keyframe and in B mode for the next
    keyframe; in P mode under AKS while it could still be the video's last frame, which ends a
    stretched interval as a keyframe (Algorithm 1 picks keyframes alike in both modes)."""
    if self._previous is None or self._schedule.mode == "B":
      return True
    return self._schedule.aks and t - self._previous.index >= self._schedule.interval

  def _answer_held(self) -> list[Prediction]:
    """P mode: a frame held as a possible last keyframe (`_waits`) was not the last one, so it is
    a non-key frame of the previous keyframe."""
    if self._schedule.mode == "B" or self._previous is None:
      return []
    ready = [self._predict(waiting, [self._previous]) for waiting in self._pending]
    self._pending = []
    return ready

  def _is_keyframe(self, t: int, resized: np.ndarray) -> bool:
    if self._previous is None:
      return t == self._first
    since = t - self._previous.index
    schedule = self._schedule
    if not schedule.aks:
      return since == schedule.interval
    if since < schedule.interval:
      return False
    return (since >= schedule.aks_max_interval
            or aks_score(resized, self._previous.image) >= schedule.aks_threshold)

  def _keyframe(self, t: int, resized: np.ndarray, frame_hw: tuple[int, int]
                ) -> list[Prediction]:
    projected, logits = self._encode_keyframe(self._network_input(resized))
    keyframe = _Keyframe(t, projected, resized)
    keyframes = [keyframe] if self._previous is None else [self._previous, keyframe]
    ready = [(t, self._labels(logits, frame_hw))]
    ready += [self._predict(waiting, keyframes) for waiting in self._pending]
    self._pending = []
    self._previous = keyframe
    self._keyframes.append(t)
    return sorted(ready, key=lambda p: p[0])

  def _predict(self, waiting: _Pending, keyframes: list[_Keyframe]) -> Prediction:
    if not keyframes:
      raise RuntimeError(f"frame {waiting.index} has no keyframe to fuse with")
    commons = [k.projected for k in keyframes]
    logits = self._fused_logits(commons, waiting.shallow)
    return waiting.index, self._labels(logits, waiting.frame_hw)

  def _network_input(self, resized: np.ndarray) -> np.ndarray:
    """The batch one frame runs as: [frame], or [frame, mirror image] with h-flip TTA."""
    return np.stack([resized, resized[:, ::-1]]) if self._flip else resized[None]

  def _labels(self, logits: jax.Array, frame_hw) -> jax.Array:
    if self._flip:
      logits = _sum_mirrored(logits)
    # One bilinear upsampling straight to the output size, as the release does (not mmseg's two).
    frame_hw = tuple(frame_hw)
    return frame_labels(logits, input_hw=frame_hw, frame_hw=frame_hw)


def aks_score(frame: np.ndarray, keyframe: np.ndarray) -> float:
  """AKS's s(j): mean |x_j - x_k| of the ImageNet-normalised frames (the mean cancels)."""
  diff = np.abs(frame.astype(np.float32) - keyframe.astype(np.float32))
  return float(np.mean(diff / np.asarray(IMAGENET_STD, np.float32)))
