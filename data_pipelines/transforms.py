"""Clip-consistent augmentation with mmseg 0.13 / mmcv 1.3 semantics (numpy + cv2, uint8 in/out).

A clip is frames uint8 [T, H, W, 3] RGB, labels [T, H, W] (255 = ignore) and optionally the flow
between consecutive frames. Geometric operations (rescale, rotate, crop, flip) take ONE random draw
per clip and apply it to every frame, label and flow field, so frames stay aligned with each other
and with the flow; `train_transform` draws the photometric changes of `data_pipelines.photometric`
(mmseg's distortion, torchvision's ColorJitter) independently per frame, as in DTERN's pipeline
(specs/dtern.md §7). Rotation and blur are DCFM's and ETC's (specs/dcfm.md §6.2, etc.md §2), and
so is crop-then-resize (DCFM).
Geometry follows one of three libraries (`train_transform.geometry`): 'mmseg' (cv2 resizes and
rotation, bilinear frames; crop, then pad bottom/right), 'semseg' (ETC, built on hszhao/semseg:
cv2 as mmseg, but its RandScale resizes by cv2's fx/fy, its RandRotate turns about (w/2, h/2)
where mmcv turns about ((w-1)/2, (h-1)/2), it flips before cropping, and its Crop splits the
padding between both ends before cropping, so a small frame is centred)
or 'torchvision' (DCFM, whose transforms are torchvision's on PIL images: Pillow
resizes, whose bilinear antialiases when it shrinks and whose nearest takes the pixel under each
target centre; Pillow's nearest-neighbour rotation, the default of RandomRotation;
RandomCrop(pad_if_needed), padding both ends by the whole shortfall before cropping).
Frames are never normalised here: the model does that. So where mmseg pads after Normalize with 0
and ETC fills with the mean colour (0 once normalised), padding and rotation here fill frames with
`MEAN_COLOUR`; DCFM fills before normalising, with black (0) or white (255), and says so.
Test-time resizing of single frames is `data_pipelines.eval_transforms`.
"""
from __future__ import annotations

from typing import NamedTuple

import cv2
import ml_collections
import numpy as np
from PIL import Image

from data_pipelines.photometric import color_jitter, photometric_distortion
from data_pipelines.sources.base import IGNORE_LABEL
from vssjax.errors import SetupError

_CROP_TRIES = 10  # mmseg RandomCrop re-draws at most 10 times for cat_max_ratio.
# ImageNet's mean colour (vssjax.models.layers.IMAGENET_MEAN, 123.675, 116.28, 103.53) rounded to
# what a uint8 frame can hold: it normalises to within 0.01 of 0 (0.0056, -0.0049, 0.0082).
MEAN_COLOUR = (124, 116, 104)


def rescale_size(hw: tuple[int, int], scale: tuple[float, float]) -> tuple[int, int]:
  """mmcv.rescale_size: the largest keep-ratio (h, w) with long edge <= max(scale) and short
  edge <= min(scale), rounded half up."""
  h, w = hw
  factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
  return int(h * factor + 0.5), int(w * factor + 0.5)


def _colour(fill: float | tuple[float, ...]) -> np.ndarray:
  """A fill value (one grey level or an RGB triple) as the uint8 RGB it puts into a frame,
  rounded as OpenCV rounds a border value."""
  return np.clip(np.rint(np.broadcast_to(fill, (3,))), 0, 255).astype(np.uint8)


class Clip(NamedTuple):
  """frames uint8 [T,H,W,3], labels [T,H,W] (255 = ignore) and optionally flow float32
  [T-1,H,W,2] ((x, y) pixels, `vssjax.flow` convention), which every geometric op moves with the
  frames: the field is resampled like an image and its vectors get the op's linear part."""
  frames: np.ndarray
  labels: np.ndarray
  flow: np.ndarray | None = None


def _map_flow(clip: Clip, field_op, linear: np.ndarray) -> np.ndarray | None:
  """Applies a spatial op to each flow field and the 2x2 `linear` map to its vectors."""
  if clip.flow is None:
    return None
  fields = np.stack([field_op(np.ascontiguousarray(f)) for f in clip.flow])
  return (fields @ linear.T.astype(np.float32)).astype(np.float32)


GEOMETRIES = ("mmseg", "semseg", "torchvision")


def whole_numbers_at_least(values, least: int) -> bool:
  """Whether every one of `values` is an int (not a bool, not a float) of at least `least`."""
  return all(isinstance(v, int) and not isinstance(v, bool) and v >= least for v in values)


def check_size(field: str, size, allow_empty: bool = False) -> tuple[int, ...]:
  """`size`, a config's pair of pixel counts, as a tuple; a `SetupError` naming `field` unless it
  is two whole numbers of at least 1 (or, with `allow_empty`, `()` for "not set"). A zero or a
  missing side failed far from the setting: in cv2, in a jitted program, or after training."""
  size = tuple(size)
  if allow_empty and not size:
    return size
  if len(size) != 2 or not whole_numbers_at_least(size, 1):
    raise SetupError(f"{field}={size}: two whole numbers of pixels, each at least 1"
                     + (", or () for none" if allow_empty else ""))
  return size


def check_train_transform(cfg: ml_collections.ConfigDict) -> None:
  """The sizes of `data.train_transform`, checked before the loader starts."""
  check_size("data.train_transform.crop_size", cfg.crop_size)
  check_size("data.train_transform.scale", cfg.scale)
  check_geometry(cfg.geometry)
  if tuple(cfg.crop_scale_range) and cfg.geometry == "mmseg":
    # mmseg crops, then pads bottom/right after the flip; a box padded before it is resized is
    # another library's crop, which the geometry names.
    raise SetupError("data.train_transform.crop_scale_range (DCFM's crop-then-resize) pads a "
                     "frame smaller than its box before cropping, as 'torchvision' (DCFM) or "
                     "'semseg' do; geometry='mmseg' pads after: set data.train_transform.geometry")


def check_geometry(geometry: str) -> str:
  if geometry not in GEOMETRIES:
    raise SetupError(f"data.train_transform.geometry must be one of {GEOMETRIES}, got "
                     f"{geometry!r}")
  return geometry


def pillow_resize(image: np.ndarray, hw: tuple[int, int], resample: Image.Resampling
                  ) -> np.ndarray:
  """`image` resized to (h, w) by Pillow with `resample`, as torchvision's Resize on PIL images."""
  return np.asarray(Image.fromarray(image).resize((hw[1], hw[0]), resample))


def _refuse_flow(clip: Clip, op: str) -> None:
  """Pillow has no two-channel float images; no method with flow uses torchvision's geometry."""
  if clip.flow is not None:
    raise SetupError(f"train_transform.geometry='torchvision' cannot {op} optical flow; use "
                     f"'mmseg' with data.flow")


def _resize_clip(clip: Clip, hw: tuple[int, int], geometry: str = "mmseg") -> Clip:
  """Bilinear frames and flow, nearest labels: with cv2 as mmcv imresize ('mmseg'; cv2 takes
  (w, h)) or with Pillow ('torchvision'). Flow vectors scale with each axis."""
  size = (hw[1], hw[0])
  if clip.frames.shape[1:3] == tuple(hw):
    return clip
  if check_geometry(geometry) == "torchvision":
    _refuse_flow(clip, "resize")
    return Clip(np.stack([pillow_resize(f, hw, Image.Resampling.BILINEAR) for f in clip.frames]),
                np.stack([pillow_resize(l, hw, Image.Resampling.NEAREST) for l in clip.labels]))
  old_h, old_w = clip.frames.shape[1:3]
  frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in clip.frames])
  labels = np.stack([cv2.resize(l, size, interpolation=cv2.INTER_NEAREST) for l in clip.labels])
  flow = _map_flow(clip, lambda f: cv2.resize(f, size, interpolation=cv2.INTER_LINEAR),
                   np.diag([hw[1] / old_w, hw[0] / old_h]))
  return Clip(frames, labels, flow)


def random_rescale(clip: Clip, scale: tuple[int, int], ratio_range: tuple[float, float],
                   rng: np.random.Generator, keep_ratio: bool = True,
                   geometry: str = "mmseg") -> Clip:
  """Rescale by ratio ~ U[ratio_range) of `scale` (w, h), as mmseg's Resize(img_scale=scale,
  ratio_range): with keep_ratio the frame's aspect ratio is kept, fitting (int(w * ratio),
  int(h * ratio)) by its long and short edge; without, the frame becomes exactly
  (int(h * ratio), int(w * ratio)) (DCFM's VSPW resize, specs/dcfm.md §6.2).
  'semseg' is its RandScale (ETC, specs/etc.md §2): cv2.resize(fx=fy=ratio) of the frame fitted
  to `scale` (the frame itself in every ETC config), so the size is rounded as cv2 rounds it and
  pixels are sampled at exactly 1/ratio, not floored as int(scale * ratio) is."""
  ratio = rng.random() * (ratio_range[1] - ratio_range[0]) + ratio_range[0]
  if geometry == "semseg":
    return _rand_scale(clip, scale, ratio, keep_ratio)
  target = (int(scale[0] * ratio), int(scale[1] * ratio))
  hw = rescale_size(clip.frames.shape[1:3], target) if keep_ratio else (target[1], target[0])
  return _resize_clip(clip, hw, geometry)


def _rand_scale(clip: Clip, scale: tuple[int, int], ratio: float, keep_ratio: bool) -> Clip:
  """semseg's RandScale: every frame (bilinear), label (nearest) and flow field resized by
  cv2.resize(None, fx, fy), fx and fy being `ratio` times the fit of the frame to `scale`."""
  h, w = clip.frames.shape[1:3]
  base_h, base_w = rescale_size((h, w), scale) if keep_ratio else (scale[1], scale[0])
  fx, fy = ratio * (base_w / w), ratio * (base_h / h)

  def resize(image, interpolation):
    return cv2.resize(image, None, fx=fx, fy=fy, interpolation=interpolation)

  frames = np.stack([resize(f, cv2.INTER_LINEAR) for f in clip.frames])
  labels = np.stack([resize(l, cv2.INTER_NEAREST) for l in clip.labels])
  flow = _map_flow(clip, lambda f: resize(f, cv2.INTER_LINEAR), np.diag([fx, fy]))
  return Clip(frames, labels, flow)


def rotate(clip: Clip, degrees: float, image_fill: float | tuple[float, ...],
           geometry: str = "mmseg") -> Clip:
  """Rotates every frame, label and flow field by `degrees` (counter-clockwise) about the image
  centre, the corners filled (frames with `image_fill`, labels with 255, flow with 0): 'mmseg'
  with cv2, bilinear frames and nearest labels, flow vectors rotated with the image, about mmcv's
  centre ((w-1)/2, (h-1)/2); 'semseg' likewise about its RandRotate's (w/2, h/2), half a pixel
  off; 'torchvision' as its RandomRotation's default on PIL images, Pillow's nearest for both."""
  if check_geometry(geometry) == "torchvision":
    _refuse_flow(clip, "rotate")
    fill = tuple(int(v) for v in _colour(image_fill))

    def turn(image, colour):
      return np.asarray(Image.fromarray(np.ascontiguousarray(image)).rotate(
          degrees, Image.Resampling.NEAREST, fillcolor=colour))

    return Clip(np.stack([turn(f, fill) for f in clip.frames]),
                np.stack([turn(l, IGNORE_LABEL) for l in clip.labels]))
  h, w = clip.frames.shape[1:3]
  centre = (w / 2, h / 2) if geometry == "semseg" else ((w - 1) / 2, (h - 1) / 2)
  matrix = cv2.getRotationMatrix2D(centre, degrees, 1.0)
  fill = tuple(float(v) for v in _colour(image_fill))

  def warp(image, interpolation, border):
    return cv2.warpAffine(image, matrix, (w, h), flags=interpolation,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border)

  frames = np.stack([warp(f, cv2.INTER_LINEAR, fill) for f in clip.frames])
  labels = np.stack([warp(l, cv2.INTER_NEAREST, IGNORE_LABEL) for l in clip.labels])
  flow = _map_flow(clip, lambda f: warp(f, cv2.INTER_LINEAR, 0), matrix[:, :2])
  return Clip(frames, labels, flow)


def random_rotate(clip: Clip, max_degrees: float, prob: float,
                  image_fill: float | tuple[float, ...], rng: np.random.Generator,
                  geometry: str = "mmseg") -> Clip:
  """With probability `prob`, one angle ~ U[-max_degrees, max_degrees] for the whole clip
  (DCFM: +-20 VSPW, +-10 Cityscapes/CamVid; ETC: +-10 with p 0.5)."""
  if rng.random() >= prob:
    return clip
  return rotate(clip, rng.uniform(-max_degrees, max_degrees), image_fill, geometry)


def random_blur(clip: Clip, prob: float, rng: np.random.Generator) -> Clip:
  """ETC: with probability `prob`, cv2.GaussianBlur(5x5, sigma 0) on every frame; labels and flow
  are unchanged. For ksize 5 and sigma 0 OpenCV uses its fixed binomial kernel [1,4,6,4,1]/16,
  not the sigma-1.1 Gaussian specs/etc.md derives; calling cv2 as ETC did keeps its behaviour."""
  if rng.random() >= prob:
    return clip
  frames = np.stack([cv2.GaussianBlur(f, (5, 5), 0) for f in clip.frames])
  return clip._replace(frames=frames)


def _crop_box(hw: tuple[int, int], crop_size: tuple[int, int], rng: np.random.Generator):
  offset_h = int(rng.integers(max(hw[0] - crop_size[0], 0) + 1))
  offset_w = int(rng.integers(max(hw[1] - crop_size[1], 0) + 1))
  return (slice(offset_h, offset_h + crop_size[0]), slice(offset_w, offset_w + crop_size[1]))


def _box_is_varied(target_label: np.ndarray, box, cat_max_ratio: float) -> bool:
  ids, counts = np.unique(target_label[box], return_counts=True)
  counts = counts[ids != IGNORE_LABEL]
  return len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio


def random_crop(clip: Clip, crop_size: tuple[int, int], cat_max_ratio: float,
                rng: np.random.Generator) -> Clip:
  """mmseg RandomCrop: one box for the clip; with cat_max_ratio < 1 the box is re-drawn (at most
  10 times, the last draw kept unchecked) until no class covers more than that share of the
  TARGET frame's (last frame's) non-ignored pixels. crop_size is (h, w)."""
  box = _crop_box(clip.frames.shape[1:3], crop_size, rng)
  if cat_max_ratio < 1.0:
    for _ in range(_CROP_TRIES):
      if _box_is_varied(clip.labels[-1], box, cat_max_ratio):
        break
      box = _crop_box(clip.frames.shape[1:3], crop_size, rng)
  flow = None if clip.flow is None else clip.flow[:, box[0], box[1]]
  return Clip(clip.frames[:, box[0], box[1]], clip.labels[:, box[0], box[1]], flow)


def random_padded_crop(clip: Clip, crop_size: tuple[int, int], cat_max_ratio: float,
                       image_fill: float | tuple[float, ...], rng: np.random.Generator,
                       geometry: str = "torchvision") -> Clip:
  """A crop that pads a frame smaller than `crop_size` BEFORE drawing the box (frames
  `image_fill`, labels 255, flow 0), unlike mmseg's crop-then-Pad at the bottom/right:
  torchvision's RandomCrop(pad_if_needed) adds the whole shortfall at both ends, so the frame
  lands anywhere inside the box; semseg's Crop splits it between the ends (the smaller half first),
  so the frame is centred along that axis. The box is then drawn as `random_crop` draws it
  (cat_max_ratio 1 for both libraries)."""
  short_h, short_w = (max(c - side, 0) for c, side in zip(crop_size, clip.frames.shape[1:3]))
  if geometry == "torchvision":
    rows, cols = (short_h, short_h), (short_w, short_w)
  else:
    rows, cols = (short_h // 2, short_h - short_h // 2), (short_w // 2, short_w - short_w // 2)
  return random_crop(_pad(clip, rows, cols, image_fill), crop_size, cat_max_ratio, rng)


def random_scaled_crop(clip: Clip, crop_size: tuple[int, int], scale_range: tuple[float, float],
                       cat_max_ratio: float, image_fill: float | tuple[float, ...],
                       rng: np.random.Generator, geometry: str = "torchvision") -> Clip:
  """DCFM's Cityscapes/CamVid scale augmentation (specs/dcfm.md §6.2): a `random_padded_crop` of
  (int(h * s), int(w * s)), s ~ U[scale_range), from the frame as it is, then resized to
  crop_size (h, w), instead of rescaling the whole frame and cropping crop_size from it. Both the
  padding and the resize are `geometry`'s ('torchvision', DCFM's, or 'semseg')."""
  s = rng.uniform(*scale_range)
  box = (int(crop_size[0] * s), int(crop_size[1] * s))
  return _resize_clip(random_padded_crop(clip, box, cat_max_ratio, image_fill, rng, geometry),
                      crop_size, geometry)


def random_hflip(clip: Clip, flip_prob: float, rng: np.random.Generator) -> Clip:
  """Mirrors the clip; flow vectors get their x negated."""
  if rng.random() >= flip_prob:
    return clip
  flow = None if clip.flow is None else clip.flow[:, :, ::-1] * np.float32([-1, 1])
  return Clip(clip.frames[:, :, ::-1], clip.labels[:, :, ::-1], flow)


def _pad(clip: Clip, rows: tuple[int, int], cols: tuple[int, int],
         image_fill: float | tuple[float, ...]) -> Clip:
  """Adds rows (top, bottom) and cols (left, right): frames filled with `image_fill`, labels
  with 255 and flow with 0."""
  if not any(rows + cols):
    return clip
  num, h, w = clip.labels.shape
  out_hw = (h + sum(rows), w + sum(cols))
  inner = (slice(None), slice(rows[0], rows[0] + h), slice(cols[0], cols[0] + w))
  frames = np.empty((num, *out_hw, 3), np.uint8)
  frames[:] = _colour(image_fill)
  frames[inner] = clip.frames
  labels = np.full((num, *out_hw), IGNORE_LABEL, clip.labels.dtype)
  labels[inner] = clip.labels
  flow = None
  if clip.flow is not None:
    flow = np.zeros((len(clip.flow), *out_hw, 2), clip.flow.dtype)
    flow[inner] = clip.flow
  return Clip(frames, labels, flow)


def pad_to(clip: Clip, size: tuple[int, int], image_fill: float | tuple[float, ...]) -> Clip:
  """mmseg Pad: bottom/right up to size (h, w); frames filled with `image_fill` (mmseg pads the
  normalised image with 0, i.e. `MEAN_COLOUR` here), labels with 255, flow with 0."""
  return _pad(clip, (0, max(size[0] - clip.frames.shape[1], 0)),
              (0, max(size[1] - clip.frames.shape[2], 0)), image_fill)


def _jitter_frames(frames: np.ndarray, strengths: tuple[float, float, float, float], which: str,
                   rng: np.random.Generator) -> np.ndarray:
  """ColorJitter drawn per frame on every frame ('all', DCFM's VSPW) or on the target, the clip's
  last frame, only ('target', DCFM's Cityscapes, whose partner frame stays as loaded)."""
  if which not in ("all", "target"):
    raise SetupError(f"color_jitter_frames must be 'all' or 'target', got {which!r}")
  first = 0 if which == "all" else len(frames) - 1
  frames = frames.copy()
  for t in range(first, len(frames)):
    frames[t] = color_jitter(frames[t], strengths, rng)
  return frames


def train_transform(clip: Clip, cfg: ml_collections.ConfigDict, rng: np.random.Generator) -> Clip:
  """The train pipeline on a clip: rescale, rotate, blur, crop, flip, photometric, pad ('semseg':
  flip, then crop, as ETC's release orders them).

  cfg: a config's `data.train_transform`, every field given (their defaults are
  `configs_lib.base_config`'s): scale (w, h), ratio_range, crop_size (h, w), cat_max_ratio,
  flip_prob, photometric, geometry ('mmseg', 'semseg' or 'torchvision': the module docstring),
  keep_ratio (False: `random_rescale` to exactly the scaled `scale`), rotate_degrees (0: off),
  rotate_prob, rotate_fill and pad_fill (image fills, one grey level or RGB), blur_prob (0: off),
  crop_scale_range (() = off; set: DCFM's crop-then-resize,
  `random_scaled_crop`, in place of rescale-then-crop, so scale and ratio_range are unused),
  color_jitter ((brightness, contrast, saturation, hue); () = off) with color_jitter_frames
  ('all': one draw per frame; 'target': the last frame only). The jitter comes first, on the
  frames as loaded, as DCFM's does.
  With every option off this is mmseg's SegFormer/DTERN pipeline. Returns frames uint8
  [T, h, w, 3], labels int32 [T, h, w] and flow float32 [T-1, h, w, 2] (if given) at crop_size.
  """
  crop_size = tuple(cfg.crop_size)
  # Labels travel as uint8 (train ids < 255 and ignore = 255), which every cv2 op accepts.
  clip = clip._replace(labels=clip.labels.astype(np.uint8))
  if cfg.color_jitter:
    clip = clip._replace(frames=_jitter_frames(clip.frames, tuple(cfg.color_jitter),
                                               cfg.color_jitter_frames, rng))
  crop_scale_range = tuple(cfg.crop_scale_range)
  pad_fill = cfg.pad_fill
  geometry = check_geometry(cfg.geometry)
  if not crop_scale_range:
    clip = random_rescale(clip, tuple(cfg.scale), tuple(cfg.ratio_range), rng,
                          cfg.keep_ratio, geometry)
  if cfg.rotate_degrees:
    clip = random_rotate(clip, cfg.rotate_degrees, cfg.rotate_prob,
                         cfg.rotate_fill, rng, geometry)
  if cfg.blur_prob:
    clip = random_blur(clip, cfg.blur_prob, rng)
  flip_first = geometry == "semseg"  # ETC flips before its crop, which pads the smaller half first
  if flip_first:
    clip = random_hflip(clip, cfg.flip_prob, rng)
  if crop_scale_range:
    clip = random_scaled_crop(clip, crop_size, crop_scale_range, cfg.cat_max_ratio, pad_fill, rng,
                              geometry)
  elif geometry in ("semseg", "torchvision"):
    clip = random_padded_crop(clip, crop_size, cfg.cat_max_ratio, pad_fill, rng, geometry)
  else:
    clip = random_crop(clip, crop_size, cfg.cat_max_ratio, rng)
  if not flip_first:
    clip = random_hflip(clip, cfg.flip_prob, rng)
  if cfg.photometric:
    clip = clip._replace(frames=np.stack(
        [photometric_distortion(np.ascontiguousarray(f), rng) for f in clip.frames]))
  clip = pad_to(clip, crop_size, pad_fill)
  flow = None if clip.flow is None else np.ascontiguousarray(clip.flow, np.float32)
  return Clip(np.ascontiguousarray(clip.frames), clip.labels.astype(np.int32), flow)

