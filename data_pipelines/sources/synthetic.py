"""Procedural synthetic videos with exact dense labels, for tests and the CPU demo.

Each video is a camera panning and zooming over a larger world canvas of textured "stuff" regions
(sky, grass, road, wall, water) with moving, mutually occluding "things" (car, person, ball, sign),
plus illumination drift, sensor noise and ignore regions (letterbox bands, a lens smudge).

Design goals, in order:
* Learnable by a small SegFormer in minutes on a CPU, but not by colour alone: every video draws its
  own colours from overlapping per-class distributions (sky vs. water, road vs. wall), so the model
  must use texture (ripples, bricks, grass streaks) and shape (wheels, heads, plates).
* Exact labels: image and label of every primitive are drawn by the same call geometry.
* Deterministic and cheap: a video is a pure function of (seed, split, index); numpy/cv2 only.
  Train and val videos come from disjoint seed streams.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import cv2
import numpy as np

from data_pipelines.sources import base

CLASS_NAMES = ("sky", "grass", "road", "wall", "water", "car", "person", "ball", "sign")
SKY, GRASS, ROAD, WALL, WATER, CAR, PERSON, BALL, SIGN = range(len(CLASS_NAMES))
GROUND_CLASSES = (GRASS, ROAD, WALL, WATER)
PALETTE = np.array([
    [70, 130, 180], [107, 142, 35], [128, 64, 128], [102, 102, 156], [0, 160, 200],
    [0, 0, 142], [220, 20, 60], [250, 120, 200], [220, 220, 0]], np.uint8)
_SPLIT_STREAM = {"train": 0, "val": 1}
# The set's knobs and their defaults, read by the configs (`base_config().data.synthetic`, the
# user-facing ones) and the TFDS builder, so that the set a config builds by default is the one a
# source made without knobs generates and TFDS's predefined config names. 24 frames: mVC_n/VEC_n
# skip videos of <= 16 frames.
DEFAULT_KNOBS = dict(num_train_videos=200, num_val_videos=16, num_frames=24, height=128,
                     width=128, seed=0)
_SHIFT = 4  # cv2 drawing: coordinates in 1/16 px, so slow objects move smoothly.
_ONE = 1 << _SHIFT


@dataclasses.dataclass(frozen=True)
class _Camera:
  """Per-frame view centre (world px) and zoom (world px per view px)."""
  cy: np.ndarray
  cx: np.ndarray
  zoom: np.ndarray


@dataclasses.dataclass(frozen=True)
class _Thing:
  cls: int
  size: float  # World px: car length, person height, ball radius, sign plate size.
  x0: float
  y0: float  # World y of the object's ground contact point.
  vx: float  # World px per frame.
  colors: tuple[tuple[float, float, float], ...]
  variant: int
  phase: float
  bounce: float  # Ball bounce height in world px.


def _jitter(rng: np.random.Generator, rgb: Sequence[float], amount: float) -> np.ndarray:
  return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def _smooth_noise(rng: np.random.Generator, hw: tuple[int, int], cell: int) -> np.ndarray:
  """Zero-mean, roughly unit-variance noise with features about `cell` pixels wide."""
  coarse = rng.standard_normal((hw[0] // cell + 3, hw[1] // cell + 3), np.float32)
  big = cv2.resize(coarse, ((hw[1] // cell + 3) * cell, (hw[0] // cell + 3) * cell),
                   interpolation=cv2.INTER_CUBIC)
  return big[cell:cell + hw[0], cell:cell + hw[1]]


def _stuff_layout(rng: np.random.Generator, wh: int, ww: int) -> np.ndarray:
  """uint8 [wh, ww] stuff classes: sky above a wavy horizon, noisy Voronoi ground cells below."""
  ys, xs = np.arange(wh, dtype=np.float32)[:, None], np.arange(ww, dtype=np.float32)[None, :]
  horizon = wh * rng.uniform(0.25, 0.42) + wh * 0.05 * np.sin(
      2 * np.pi * xs / (ww * rng.uniform(0.4, 1.2)) + rng.uniform(0, 2 * np.pi))
  wobble = _smooth_noise(rng, (wh, ww), max(4, wh // 10))
  num_cells = int(rng.integers(4, 7))
  cell_classes = np.resize(rng.permutation(GROUND_CLASSES), num_cells).astype(np.uint8)
  sy = rng.uniform(horizon.mean(), wh, num_cells).astype(np.float32)
  sx = rng.uniform(0, ww, num_cells).astype(np.float32)
  # Cells are found at half resolution: 4x cheaper, and their wobbly borders hide the steps.
  half = (slice(None, None, 2), slice(None, None, 2))
  dist = np.sqrt((ys[half[0], :, None] - sy) ** 2 + (xs[:, half[1], None] - sx) ** 2)
  dist += wobble[half][..., None] * rng.uniform(-0.08, 0.08, num_cells).astype(np.float32) * ww
  ground = cv2.resize(cell_classes[np.argmin(dist, axis=-1)], (ww, wh),
                      interpolation=cv2.INTER_NEAREST)
  sky = ys < horizon + wobble * wh * 0.02
  return np.where(sky, np.uint8(SKY), ground)


def _sky(rng: np.random.Generator, ys: np.ndarray, coarse: np.ndarray) -> np.ndarray:
  """Smooth: a vertical gradient with soft clouds and no fine grain."""
  base = _jitter(rng, [(120, 170, 225), (185, 195, 210), (225, 170, 140), (60, 120, 170)][
      rng.integers(4)], 25)
  gradient = 0.8 + 0.35 * ys / ys.max()
  clouds = np.clip(coarse * 0.9 - 0.2, 0, 1) * rng.uniform(0.2, 0.8)
  return (base * gradient[..., None]) * (1 - clouds[..., None]) + 235 * clouds[..., None]


def _grass(rng: np.random.Generator, fine: np.ndarray, coarse: np.ndarray) -> np.ndarray:
  """Strong vertical streaks (blades)."""
  base = _jitter(rng, [(70, 130, 40), (120, 140, 50), (40, 90, 35), (95, 120, 70)][
      rng.integers(4)], 20)
  streaks = cv2.blur(fine, (1, 7)) * np.sqrt(7)  # Vertical blades.
  return base + streaks[..., None] * np.array([18, 30, 12], np.float32) + coarse[..., None] * 12


def _road(rng: np.random.Generator, fine: np.ndarray, coarse: np.ndarray) -> np.ndarray:
  """Grey-ish isotropic grain; its colours overlap the wall's."""
  gray = rng.uniform(60, 150)
  base = np.full(3, gray, np.float32) + rng.uniform(-12, 12, 3)
  return base + (fine * 9 + coarse * 6)[..., None]


def _wall(rng: np.random.Generator, wh: int, ww: int, brick_h: int) -> np.ndarray:
  """Staggered bricks of varying shade between bright mortar lines."""
  base = _jitter(rng, [(150, 70, 50), (190, 170, 140), (125, 125, 130), (110, 150, 190)][
      rng.integers(4)], 30)
  brick_w = 2 * brick_h + 1
  rows = np.arange(wh)
  brick_row = rows // brick_h
  xs_staggered = np.arange(ww)[None, :] + ((brick_row % 2) * (brick_w // 2))[:, None]
  brick_col = xs_staggered // brick_w
  shade = rng.uniform(-22, 22, (brick_row[-1] + 1, brick_col.max() + 1)).astype(np.float32)
  mortar = ((rows % brick_h) == 0)[:, None] | ((xs_staggered % brick_w) == 0)
  img = base + shade[brick_row[:, None], brick_col][..., None]
  return np.where(mortar[..., None], base * 0.4 + 130, img)


def _water_base(rng: np.random.Generator, coarse: np.ndarray) -> np.ndarray:
  """Sky-like colours; the animated ripples (`_ripple`) tell water apart."""
  base = _jitter(rng, [(40, 90, 150), (30, 110, 120), (90, 140, 190), (60, 80, 100)][
      rng.integers(4)], 25)
  return base + coarse[..., None] * 8


def _world(rng: np.random.Generator, wh: int, ww: int, height: int):
  """The static world: float32 RGB [wh, ww, 3] and uint8 stuff labels [wh, ww]."""
  labels = _stuff_layout(rng, wh, ww)
  ys = np.arange(wh, dtype=np.float32)[:, None]
  fine = rng.standard_normal((wh, ww), np.float32)
  coarse = _smooth_noise(rng, (wh, ww), max(3, height // 12))
  textures = {
      SKY: _sky(rng, ys, coarse),
      GRASS: _grass(rng, fine, coarse),
      ROAD: _road(rng, fine, coarse),
      WALL: _wall(rng, wh, ww, max(3, height // 20)),
      WATER: _water_base(rng, coarse),
  }
  image = np.zeros((wh, ww, 3), np.float32)
  for cls, texture in textures.items():
    mask = labels == cls
    image[mask] = texture[mask]
  return image, labels


def _camera(rng: np.random.Generator, num_frames: int, wh: int, ww: int, height: int,
            width: int) -> _Camera:
  """A linear pan with a geometric zoom, kept inside the world canvas."""
  zoom = np.geomspace(*rng.uniform(0.8, 1.15, 2), num_frames)
  margin_x = 0.6 * width
  cx0 = rng.uniform(margin_x, ww - margin_x)
  cx1 = np.clip(cx0 + rng.uniform(-0.7, 0.7) * width, margin_x, ww - margin_x)
  cy0, cy1 = wh / 2 + rng.uniform(-0.1, 0.1, 2) * height
  steps = np.linspace(0.0, 1.0, num_frames)
  return _Camera(cy=cy0 + (cy1 - cy0) * steps, cx=cx0 + (cx1 - cx0) * steps, zoom=zoom)


def _things(rng: np.random.Generator, labels: np.ndarray, camera: _Camera, height: int,
            width: int) -> list[_Thing]:
  """Objects standing on the ground inside the camera's path, sorted far to near (z-order)."""
  wh = labels.shape[0]
  ground_top = float(np.argmax((labels != SKY).any(axis=1)))
  x_lo, x_hi = camera.cx.min() - 0.45 * width, camera.cx.max() + 0.45 * width
  y_lo, y_hi = camera.cy.min() - 0.2 * height, camera.cy.max() + 0.5 * height
  counts = {CAR: rng.integers(1, 4), PERSON: rng.integers(1, 4), BALL: rng.integers(1, 3),
            SIGN: rng.integers(1, 3)}
  size_range = {CAR: (0.18, 0.4), PERSON: (0.12, 0.3), BALL: (0.015, 0.04), SIGN: (0.04, 0.08)}
  speed = {CAR: 0.03, PERSON: 0.008, BALL: 0.02, SIGN: 0.0}
  things = []
  for cls, count in counts.items():
    for _ in range(count):
      y0 = rng.uniform(max(ground_top, y_lo), min(wh, y_hi))
      perspective = 0.6 + 0.8 * (y0 - ground_top) / max(wh - ground_top, 1)
      size = max(rng.uniform(*size_range[cls]) * height * perspective, 1.5)
      colors = tuple(tuple(rng.uniform(0, 255, 3)) for _ in range(3))
      things.append(_Thing(
          cls=cls, size=size, x0=rng.uniform(x_lo, x_hi), y0=y0,
          vx=rng.uniform(-1, 1) * speed[cls] * width, colors=colors,
          variant=int(rng.integers(3)), phase=rng.uniform(0, 2 * np.pi),
          bounce=rng.uniform(0.05, 0.2) * height if cls == BALL else 0.0))
  return sorted(things, key=lambda thing: thing.y0)


def _fixed(points) -> np.ndarray:
  return np.round(np.asarray(points, np.float64) * _ONE).astype(np.int32)


def _ellipse_args(center, axes) -> tuple[tuple[int, int], tuple[int, int]]:
  """cv2.ellipse centre and axes in fixed point; axes of at least half a pixel stay visible."""
  return (tuple(round(float(v) * _ONE) for v in center),
          tuple(max(round(float(v) * _ONE), _ONE // 2) for v in axes))


class _Canvas:
  """Draws each primitive into the image and the label with identical geometry."""

  def __init__(self, image: np.ndarray, label: np.ndarray):
    self.image, self.label = image, label

  def polygon(self, points, color, cls: int) -> None:
    pts = [_fixed(points)]
    cv2.fillPoly(self.image, pts, color, cv2.LINE_8, _SHIFT)
    cv2.fillPoly(self.label, pts, cls, cv2.LINE_8, _SHIFT)

  def box(self, x0, y0, x1, y1, color, cls: int) -> None:
    self.polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], color, cls)

  def ellipse(self, center, axes, angle, color, cls: int) -> None:
    c, a = _ellipse_args(center, axes)
    cv2.ellipse(self.image, c, a, float(angle), 0, 360, color, -1, cv2.LINE_8, _SHIFT)
    cv2.ellipse(self.label, c, a, float(angle), 0, 360, cls, -1, cv2.LINE_8, _SHIFT)


def _draw_car(canvas: _Canvas, x: float, y: float, s: float, thing: _Thing) -> None:
  body, window = thing.colors[0], (170.0, 200.0, 220.0)
  canvas.box(x - s / 2, y - 0.36 * s, x + s / 2, y - 0.1 * s, body, CAR)
  canvas.polygon([(x - 0.3 * s, y - 0.35 * s), (x + 0.3 * s, y - 0.35 * s),
                  (x + 0.18 * s, y - 0.56 * s), (x - 0.18 * s, y - 0.56 * s)], body, CAR)
  canvas.polygon([(x - 0.24 * s, y - 0.37 * s), (x + 0.24 * s, y - 0.37 * s),
                  (x + 0.15 * s, y - 0.52 * s), (x - 0.15 * s, y - 0.52 * s)], window, CAR)
  for wx in (x - 0.3 * s, x + 0.3 * s):
    canvas.ellipse((wx, y - 0.11 * s), (0.11 * s, 0.11 * s), 0, (25.0, 25.0, 25.0), CAR)
    canvas.ellipse((wx, y - 0.11 * s), (0.04 * s, 0.04 * s), 0, (150.0, 150.0, 150.0), CAR)


def _draw_person(canvas: _Canvas, x: float, y: float, s: float, thing: _Thing, t: int) -> None:
  shirt, pants = thing.colors[0], thing.colors[1]
  skin = (224.0, 172.0, 105.0) if thing.variant else (141.0, 85.0, 36.0)
  stride = 0.08 * s * np.sin(0.9 * t + thing.phase)
  for leg in (-1, 1):
    lx = x + leg * (0.06 * s + stride)
    canvas.box(lx - 0.05 * s, y - 0.47 * s, lx + 0.05 * s, y, pants, PERSON)
  canvas.box(x - 0.14 * s, y - 0.8 * s, x + 0.14 * s, y - 0.45 * s, shirt, PERSON)
  canvas.ellipse((x, y - 0.9 * s), (0.1 * s, 0.11 * s), 0, skin, PERSON)


def _draw_ball(canvas: _Canvas, x: float, y: float, r: float, thing: _Thing, t: int) -> None:
  canvas.ellipse((x, y - r), (r, r), 0, (240.0, 240.0, 240.0), BALL)
  canvas.ellipse((x, y - r), (r, 0.45 * r), 40.0 * t + np.degrees(thing.phase), thing.colors[0],
                 BALL)


def _draw_sign(canvas: _Canvas, x: float, y: float, s: float, thing: _Thing) -> None:
  pole_h = 2.4 * s
  canvas.box(x - max(0.1 * s, 0.5), y - pole_h, x + max(0.1 * s, 0.5), y,
             (150.0, 150.0, 150.0), SIGN)
  cy = y - pole_h
  white = (245.0, 245.0, 245.0)
  if thing.variant == 0:  # Stop-like octagon.
    angles = np.pi / 8 + np.arange(8) * np.pi / 4
    for radius, color in ((s / 2, white), (0.42 * s, (200.0, 20.0, 20.0))):
      canvas.polygon(np.stack([x + radius * np.cos(angles), cy + radius * np.sin(angles)], -1),
                     color, SIGN)
  elif thing.variant == 1:  # Warning triangle.
    for radius, color in ((s / 2, (200.0, 20.0, 20.0)), (0.3 * s, white)):
      canvas.polygon([(x, cy - radius), (x + radius, cy + 0.8 * radius),
                      (x - radius, cy + 0.8 * radius)], color, SIGN)
  else:  # Information square.
    canvas.box(x - s / 2, cy - s / 2, x + s / 2, cy + s / 2, white, SIGN)
    canvas.box(x - 0.4 * s, cy - 0.4 * s, x + 0.4 * s, cy + 0.4 * s, (20.0, 60.0, 180.0), SIGN)


def _draw_things(canvas: _Canvas, things: list[_Thing], camera: _Camera, t: int, height: int,
                 width: int) -> None:
  zoom = camera.zoom[t]
  for thing in things:
    wx = thing.x0 + thing.vx * t
    wy = thing.y0 - thing.bounce * abs(np.sin(0.8 * t + thing.phase))
    x = (wx - camera.cx[t]) / zoom + (width - 1) / 2
    y = (wy - camera.cy[t]) / zoom + (height - 1) / 2
    s = thing.size / zoom
    if thing.cls == CAR:
      _draw_car(canvas, x, y, s, thing)
    elif thing.cls == PERSON:
      _draw_person(canvas, x, y, s, thing, t)
    elif thing.cls == BALL:
      _draw_ball(canvas, x, y, s, thing, t)
    else:
      _draw_sign(canvas, x, y, s, thing)


def _ripple(map_y: np.ndarray, map_x: np.ndarray, t: int, height: int) -> np.ndarray:
  """Animated water highlights as a function of world coordinates."""
  wavelength = max(3.0, height / 20)
  wave = np.sin(2 * np.pi * (map_y / wavelength + 0.15 * np.sin(map_x / (4 * wavelength)))
                + 0.9 * t)
  return np.clip((wave - 0.5) * 2.5, 0, 1) * 55 - 10


@dataclasses.dataclass(frozen=True)
class _Nuisance:
  """Per-video illumination drift, sensor noise and ignore regions."""
  gain: np.ndarray  # [T, 3]
  noise_std: float
  band: int  # Letterbox rows at top and bottom (0 = none).
  smudge: tuple[float, float, float, float] | None  # cy, cx, ay, ax in view px.


def _nuisance(rng: np.random.Generator, num_frames: int, height: int, width: int) -> _Nuisance:
  steps = np.arange(num_frames)[:, None]
  drift = rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * steps / rng.uniform(8, 24)
                                          + rng.uniform(0, 2 * np.pi))
  tint = rng.uniform(-0.08, 0.08, 3) * (steps / max(num_frames - 1, 1) - 0.5)
  gain = (rng.uniform(0.85, 1.15) * (1 + drift + tint)).astype(np.float32)
  band = int(round(rng.uniform(0.03, 0.07) * height)) if rng.random() < 0.4 else 0
  smudge = None
  if rng.random() < 0.4:
    smudge = (rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width,
              rng.uniform(0.08, 0.18) * height, rng.uniform(0.08, 0.18) * width)
  return _Nuisance(gain=gain, noise_std=rng.uniform(2, 6), band=band, smudge=smudge)


def _apply_ignore_regions(image: np.ndarray, label: np.ndarray, nuisance: _Nuisance,
                          height: int) -> None:
  if nuisance.smudge is not None:
    cy, cx, ay, ax = nuisance.smudge
    mask = np.zeros(label.shape, np.uint8)
    cv2.ellipse(mask, *_ellipse_args((cx, cy), (ax, ay)), 0, 0, 360, 1, -1, cv2.LINE_8, _SHIFT)
    sigma = max(height / 16, 1.0)
    margin = int(3 * sigma) + 1  # Blur only around the smudge: most of the cost otherwise.
    roi = (slice(max(int(cy - ay) - margin, 0), int(cy + ay) + margin + 1),
           slice(max(int(cx - ax) - margin, 0), int(cx + ax) + margin + 1))
    inside = mask[roi].astype(bool)
    image[roi][inside] = cv2.GaussianBlur(image[roi], (0, 0), sigma)[inside] * 0.5 + 100
    label[roi][inside] = base.IGNORE_LABEL
  if nuisance.band:
    for rows in (slice(0, nuisance.band), slice(height - nuisance.band, height)):
      image[rows] = 8
      label[rows] = base.IGNORE_LABEL


def render_video(rng: np.random.Generator, num_frames: int, height: int,
                 width: int) -> tuple[np.ndarray, np.ndarray]:
  """Renders one video: uint8 frames [T, H, W, 3] RGB and uint8 labels [T, H, W]."""
  wh, ww = int(round(1.4 * height)), int(round(2.2 * width))
  world_image, world_label = _world(rng, wh, ww, height)
  camera = _camera(rng, num_frames, wh, ww, height, width)
  things = _things(rng, world_label, camera, height, width)
  nuisance = _nuisance(rng, num_frames, height, width)
  vy, vx = np.mgrid[0:height, 0:width].astype(np.float32)
  vy -= (height - 1) / 2
  vx -= (width - 1) / 2
  frames = np.empty((num_frames, height, width, 3), np.uint8)
  labels = np.empty((num_frames, height, width), np.uint8)
  for t in range(num_frames):
    map_y = (camera.cy[t] + camera.zoom[t] * vy).astype(np.float32)
    map_x = (camera.cx[t] + camera.zoom[t] * vx).astype(np.float32)
    image = cv2.remap(world_image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    label = cv2.remap(world_label, map_x, map_y, cv2.INTER_NEAREST,
                      borderMode=cv2.BORDER_REFLECT)
    water = label == WATER
    image[water] += _ripple(map_y[water], map_x[water], t, height)[:, None]
    _draw_things(_Canvas(image, label), things, camera, t, height, width)
    _apply_ignore_regions(image, label, nuisance, height)
    image *= nuisance.gain[t]
    # Uniform noise of the same std: 5x cheaper to draw than Gaussian, looks alike.
    image += (rng.random(image.shape, np.float32) - 0.5) * (np.sqrt(12) * nuisance.noise_std)
    np.clip(image, 0, 255, out=image)
    frames[t] = image + 0.5  # Rounds on the cast to uint8.
    labels[t] = label
  return frames, labels


class _SyntheticVideos(Sequence):
  """Lazily rendered videos of one split; keeps the most recent one for repeated access."""

  def __init__(self, split: str, count: int, num_frames: int, height: int, width: int, seed: int):
    self._split, self._count, self._seed = split, count, seed
    self._shape = (num_frames, height, width)
    self._last: tuple[int, base.VideoRecord] | None = None

  def __len__(self) -> int:
    return self._count

  def __getitem__(self, index: int) -> base.VideoRecord:
    if not -self._count <= index < self._count:
      raise IndexError(f"video {index} out of range for {self._count} {self._split} videos")
    index %= self._count
    last = self._last
    if last is not None and last[0] == index:
      return last[1]
    rng = np.random.default_rng([self._seed, _SPLIT_STREAM[self._split], index])
    frames, labels = render_video(rng, *self._shape)
    name = f"synthetic_{self._split}_{index:05d}"
    record = base.VideoRecord(name, tuple(
        base.FrameRef(f"{name}/{t:04d}", frame, label)
        for t, (frame, label) in enumerate(zip(frames, labels))))
    self._last = (index, record)
    return record


@base.register_source
class SyntheticVideoSource(base.VideoSource):
  """The procedural video set; every knob changes the data, so builders key their cache on all."""
  name = "synthetic"
  class_names = CLASS_NAMES
  splits = tuple(_SPLIT_STREAM)
  official_palette = PALETTE

  def __init__(self, num_train_videos: int = DEFAULT_KNOBS["num_train_videos"],
               num_val_videos: int = DEFAULT_KNOBS["num_val_videos"],
               num_frames: int = DEFAULT_KNOBS["num_frames"],
               height: int = DEFAULT_KNOBS["height"], width: int = DEFAULT_KNOBS["width"],
               seed: int = DEFAULT_KNOBS["seed"]):
    self.knobs = dict(num_train_videos=num_train_videos, num_val_videos=num_val_videos,
                      num_frames=num_frames, height=height, width=width, seed=seed)
    self._counts = {"train": num_train_videos, "val": num_val_videos}

  def videos(self, split: str) -> Sequence[base.VideoRecord]:
    self.check_split(split)
    k = self.knobs
    return _SyntheticVideos(split, self._counts[split], k["num_frames"], k["height"], k["width"],
                            k["seed"])
