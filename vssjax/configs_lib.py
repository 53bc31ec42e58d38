"""Shared config building blocks for `configs/<method>/<dataset>_<backbone>.py`.

Config files live outside the package, so everything they share lives here: the default sections
every run has (`base_config`: seed, method, model, clip, data, optim, train, eval, bench, mesh,
sharding_rules, init, published) and `parse_arg`, which turns the `--config=file.py:quick,steps=10`
suffix into typed values (the big_vision convention).

Configs are returned locked: a typo such as `--config.trian.steps=1` fails instead of being silently
ignored.
"""

from __future__ import annotations

import difflib
import json
import pathlib
import re
import runpy
from typing import Any

import ml_collections
from etils import epath
from ml_collections.config_flags import config_path

from data_pipelines.sources import synthetic
from data_pipelines.transforms import MEAN_COLOUR
from vssjax.errors import SetupError
from vssjax.files import write_text_whole

ConfigDict = ml_collections.ConfigDict


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_arg(arg: str | None, **spec: Any) -> ConfigDict:
  """Parses `"quick,steps=10"` against defaults in `spec` (their types are kept).

  A bare name sets a boolean flag to True; `name=value` is cast to the default's type. Unknown names
  raise, so a misspelt argument never passes silently.
  """
  result = ConfigDict(spec)
  if not arg:
    return result
  for item in arg.split(","):
    item = item.strip()
    if not item:
      continue
    name, sep, value = item.partition("=")
    if name not in spec:
      raise SetupError(f"unknown config argument {name!r}; known: {sorted(spec)}")
    default = spec[name]
    if not sep:
      if not isinstance(default, bool):
        raise SetupError(f"config argument {name!r} needs a value ({name}=...)")
      result[name] = True
    elif isinstance(default, bool):
      if value.lower() not in _TRUE + _FALSE:  # 'flase' was taken as False
        raise SetupError(f"config argument {name}={value!r}: not a bool (true or false, 1 or 0, "
                         f"yes or no, on or off; its default is {default!r})")
      result[name] = value.lower() in _TRUE
    else:
      try:
        result[name] = type(default)(value)
      except ValueError:
        raise SetupError(f"config argument {name}={value!r}: not a {type(default).__name__} "
                         f"(its default is {default!r})") from None
  return result


def load_sibling(config_file: str, name: str) -> dict[str, Any]:
  """The globals of config file `name` next to `config_file`, so variants share one builder.

  Config files are loaded by path (`--config=configs/x/y.py`), not imported as a package.
  """
  return runpy.run_path(str(pathlib.Path(config_file).with_name(name)))


def shrink_to_quick(c: ConfigDict, num_frames: int = 6) -> None:
  """The `quick` variant every config offers: a tiny model on a tiny synthetic set.

  It builds, trains 2 steps and evaluates in seconds on a CPU (smoke runs and the config tests);
  published numbers are dropped, as they would mean nothing next to it.
  """
  c.data.source = "synthetic"
  c.data.eval_split = "val"  # the synthetic set's, for configs that evaluate on a test split
  c.data.num_classes = 9
  c.data.synthetic.update(
      num_train_videos=8, num_val_videos=2, num_frames=num_frames, height=64, width=64)
  c.data.train_transform.update(scale=(64, 64), crop_size=(48, 48))
  c.data.eval_transform.update(scale=(64, 64), exact_size=())
  if c.data.eval_transform.slide_crop:  # still sliding: 2x2 overlapping windows
    c.data.eval_transform.update(slide_crop=(48, 48), slide_stride=(32, 32))
  c.data.batch_size = 4
  if re.fullmatch(r"b\d", c.model.backbone):  # a MiT; other backbones refuse these overrides
    c.model.backbone_overrides.update(
        embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 4))
  c.model.decoder_dim = 32
  c.optim.warmup_steps = 1
  c.train.update(steps=2, log_every=1, checkpoint_every=2)
  c.published.source = ""
  c.published.metrics = ConfigDict()
  c.published.assumes = ()


# The fields every method's network is sized by (backbone, its layout, head width, classes):
# published numbers are of the config file's values, so a run that overrides one (a MiT-B0
# checkpoint converted with the B2 config's `model.backbone=b0`, SegFormer's 768-wide head,
# another class count) is another model, and is not compared with them. A method's own network
# fields (DCFM's `model.common_dim`, SD-CPC's `model.dssa`) are not among them: a config adds
# those it publishes numbers of to `assumes`.
NETWORK_FIELDS = ("model.backbone", "model.backbone_overrides.embed_dims",
                  "model.backbone_overrides.depths", "model.backbone_overrides.num_heads",
                  "model.decoder_dim", "data.num_classes")
# The test protocol they are of: the dataset, its split and the test resize (a run scored on the
# train split, or at another scale, next to the val numbers read as a failed reproduction).
PROTOCOL_FIELDS = ("data.source", "data.eval_split") + tuple(
    f"data.eval_transform.{name}" for name in ("scale", "size_divisor", "exact_size",
                                               "resize_backend", "slide_crop", "slide_stride"))
# The scoring rules one metric's published number is of (field -> the metrics it concerns; a
# family such as "mVC" names each mVC_n): another mIoU convention makes the mIoU another number,
# not the mVC.
CONVENTION_FIELDS = (("eval.miou_convention", ("mIoU",)), ("eval.vc_convention", ("mVC",)))


def set_published(c: ConfigDict, source: str, metrics: dict[str, float],
                  assumes: tuple[tuple[Any, ...], ...] = ()) -> None:
  """Gives `c` the published numbers `metrics` (name -> %) of `source`, for the network `c` has
  now (`NETWORK_FIELDS`), its test protocol (`PROTOCOL_FIELDS`) and scoring conventions
  (`CONVENTION_FIELDS`), and the other settings of `assumes`: (field, value) pairs that every
  number is of (DCFM's mode and K), or (field, value, metric names) triples that only those
  metrics are of (ETC's TC video list: the TC only). A run that overrides one is not compared
  with the numbers it concerns (`report.published_for`). Call it once `c`'s network, data and
  conventions are set."""
  c.published.source = source
  c.published.metrics = ConfigDict(dict(metrics))
  c.published.assumes = (
      tuple(tuple(entry) for entry in assumes)
      + tuple((field, config_path.get_value(field, c))
              for field in NETWORK_FIELDS + PROTOCOL_FIELDS)
      + tuple((field, config_path.get_value(field, c), names)
              for field, names in CONVENTION_FIELDS))


def synthetic_demo(c: ConfigDict, *, batch_size: int, half_width: bool = True) -> None:
  """The CPU demo recipe every method's synthetic config shares, so that they compare like for
  like (docs/results.md): the synthetic set with its default transforms, the MiT-B0 layout (at
  half width unless `half_width=False`), decoder width 128, AdamW at 1e-3 from scratch with 50
  warm-up steps, 600 steps. `batch_size` is in clips: each method picks it so that 16 frames go
  through the backbone per step.
  """
  defaults = base_config().data
  c.data.source = "synthetic"
  c.data.num_classes = 9
  c.data.batch_size = batch_size
  c.data.train_transform = defaults.train_transform
  c.data.eval_transform = defaults.eval_transform
  c.model.backbone = "b0"
  if half_width:
    c.model.backbone_overrides.embed_dims = (16, 32, 80, 128)
  c.model.decoder_dim = 128
  c.optim.lr = 1e-3  # from scratch: far above the 6e-5 used to fine-tune ImageNet weights
  c.optim.warmup_steps = 50
  c.train.update(steps=600, log_every=25, checkpoint_every=200)
  c.published.source = ""


def base_config() -> ConfigDict:
  """The sections every method config starts from; method configs override fields."""
  c = ConfigDict()
  c.seed = 0

  # Method section: which method (module + loss + predictor) and its model.
  c.method = ConfigDict(dict(
      name="segformer",
      loss_average="valid",  # 'valid' (mean over non-ignored pixels) or 'all' (mmseg 0.13)
  ))
  c.model = ConfigDict(dict(
      # A MiT 'b0'..'b5', a ResNet 'r18'/'r50'/'r101' or 'mobilenet_v2', as the method takes
      # (vssjax/methods/backbones.py). The MiT settings (backbone_overrides, drop_path_rate,
      # attention_impl, scan_blocks) are refused changed on another backbone.
      backbone="b0",
      backbone_overrides=ConfigDict(dict(embed_dims=(), depths=(), num_heads=())),
      decoder_dim=256,
      drop_path_rate=0.1,  # MiT's stochastic depth
      dropout_rate=0.1,  # the heads' dropout before their classifier (DCFM's, PSPNet's too)
      dtype="float32",  # compute dtype; parameters are always float32
      # The form of the depth-wise convs of MiT and the DTERN and SD-CPC heads: 'auto' = shifted
      # adds on CPU, grouped conv on GPU/TPU (notes §6); refused changed where there are none.
      dwconv_impl="auto",
      # MiT attention, jax.nn.dot_product_attention's `implementation`: 'xla' (anywhere) or
      # 'cudnn' (fused, no stored score matrix; NVIDIA GPUs and dtype 'bfloat16' only, refused
      # elsewhere as the method is built; odd lengths are padded for jax 0.11.2's training rule,
      # ops/attention.py).
      attention_impl="xla",
      # Training runs a MiT stage's blocks as one `lax.scan` over their stacked parameters: MiT-B5's
      # train step compiles ~3x faster (B2's no faster), with the same parameters, checkpoints and
      # outputs; its step-time cost is within the CPU's noise. Off by default until measured on
      # the accelerators (docs/benchmarks.md).
      scan_blocks=False,
      # Rematerialisation of the backbone's blocks in training (MiT's, and ResNet's and
      # MobileNetV2's residual blocks): '' keeps every activation for the backward pass; a
      # jax.checkpoint_policies name, 'nothing_saveable' (a block keeps only its input),
      # 'dots_saveable' or 'dots_with_no_batch_dims_saveable', recomputes the rest there instead:
      # less memory a frame for about one more forward pass (docs/scaling.md). The same
      # parameters, outputs and gradients; a backbone of one's own applies `nn.remat` itself.
      remat="",
      # JAX's default precision of float32 matmuls and convolutions (jax_default_matmul_precision,
      # process-wide, set by `get_method`): '' leaves the platform's own (TF32 on NVIDIA GPUs from
      # Ampere on, bf16 passes on TPU, full float32 on CPU); 'highest' is full float32, as
      # PyTorch's matmuls (its cuDNN convolutions use TF32 by default); 'tensorfloat32', 'bfloat16'.
      matmul_precision="",
  ))
  c.clip = ConfigDict(dict(kind="single", offsets=(0,), reverse_prob=0.0))

  # Data section (data_pipelines reads these names).
  c.data = ConfigDict(dict(
      source="synthetic",
      backend="arrayrecord",
      data_dir="",
      train_split="train",
      eval_split="val",
      num_classes=0,  # filled from the source by each config
      # The generator's defaults (24 frames: mVC_n/VEC_n skip videos of <= 16 frames).
      synthetic=ConfigDict(dict(synthetic.DEFAULT_KNOBS)),
      batch_size=16,
      # What a training epoch visits once each: 'videos' (the sampler picks each one's target) or
      # 'frames' (every labelled frame as a target; DCFM's VSPW epoch).
      train_epoch="videos",
      num_workers=0,
      # True: a training clip that cannot be read (DataError) is replaced by one of another video,
      # with a warning, up to 100 in a row; False (default) stops the run naming the file.
      skip_bad_samples=False,
      # Image fills (rotate_fill, pad_fill) are RGB on the 0..255 scale; the mean colour is 0 once
      # normalised, which is what mmseg's pad and ETC's fills give (DCFM configs set their own).
      train_transform=ConfigDict(dict(
          # cat_max_ratio: mmseg's RandomCrop redraws (up to 10 times) a crop in which one class
          # covers more than this share of the labelled pixels.
          scale=(128, 128), ratio_range=(0.5, 2.0), crop_size=(96, 96), cat_max_ratio=0.75,
          flip_prob=0.5, photometric=True,
          rotate_degrees=0.0, rotate_prob=1.0, rotate_fill=MEAN_COLOUR, blur_prob=0.0,
          pad_fill=MEAN_COLOUR,
          # 'mmseg' (cv2 resizes and rotation, crop then pad bottom/right), 'semseg' (ETC: as
          # mmseg, but RandScale's cv2 fx/fy resize, flip before the crop, and a small frame is
          # padded centred before the crop) or 'torchvision' (DCFM:
          # Pillow resizes, nearest rotation, pad both ends then crop); keep_ratio=False
          # rescales to exactly ratio * scale (DCFM's VSPW).
          geometry="mmseg", keep_ratio=True,
          # (lo, hi): DCFM's crop of crop_size * s, s ~ U[lo, hi), resized to crop_size, in place
          # of mmseg's rescale by ratio_range and crop (geometry 'torchvision' or 'semseg', whose
          # padding comes before the crop); () = off.
          crop_scale_range=(),
          # torchvision ColorJitter (brightness, contrast, saturation, hue), DCFM's colour
          # augmentation, on 'all' frames or the 'target' only; () = off.
          color_jitter=(), color_jitter_frames="all")),
      # Optical flow between consecutive clip frames ('dis' | 'farneback' | '' = none).
      flow=ConfigDict(dict(method="", cache_dir="")),
      # The predictors' test resize (keep-ratio into `scale`, sides rounded up to `size_divisor`;
      # predictions come back at the frame's size). `exact_size` (h, w): the evaluator first
      # resizes every frame (bilinear) and its label (nearest) to exactly this size, so metrics
      # are scored there (DCFM's VSPW protocol: 480x853; --mode=infer predicts there too, its
      # labels brought back to the frame's size); () keeps the stored size.
      # `resize_backend`: 'cv2' (mmseg, semseg) or 'pillow' (torchvision on PIL images, DCFM:
      # its bilinear antialiases when it shrinks). `slide_crop`/`slide_stride` (h, w): mmseg's
      # 'slide' test mode, the resized frame predicted in overlapping windows whose logits are
      # averaged (SegFormer only: vssjax/methods/sliding_window.py); () = the whole frame at once.
      eval_transform=ConfigDict(dict(scale=(128, 128), size_divisor=32, exact_size=(),
                                     resize_backend="cv2", slide_crop=(), slide_stride=())),
      # (before, after): evaluate only the frames [a - before, a + after] around each labelled
      # frame a, scoring a alone (DCFM's Cityscapes/CamVid protocol); () = every frame of every
      # video. The videos temporal consistency scores (eval.tc_video_list) are evaluated whole.
      eval_label_window=(),
  ))

  # Optimizer section: AdamW with mmcv-style parameter groups, poly schedule with linear warm-up.
  c.optim = ConfigDict(dict(
      name="adamw",  # 'adamw' | 'sgd' (momentum below; PyTorch semantics for both)
      lr=6e-5,
      weight_decay=0.01,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      momentum=0.9,  # sgd only
      # (regex searched in the '/'-joined parameter path, lr multiplier, weight-decay multiplier);
      # first match wins, as in mmcv's custom_keys resolved for the SegFormer/DTERN configs.
      param_groups=(("pos_block", 1.0, 0.0), ("head", 10.0, 1.0), ("norm", 1.0, 0.0)),
      # mmcv's poly schedule, lr(i) = (lr - min_lr) * (1 - i / train.steps)^power + min_lr, its
      # first warmup_steps scaled linearly from warmup_ratio to 1 (vssjax/train/optimizer.py).
      warmup_steps=1500,
      warmup_ratio=1e-6,
      power=1.0,
      min_lr=0.0,
      poly_after_warmup=False,  # True: DCFM's PolyScheduler (decay over the post-warm-up steps)
      grad_clip_norm=0.0,  # 0 disables clipping
      # k > 1: an update from the gradients of k steps of data.batch_size clips each; every step
      # count (train.steps, the intervals, warm-up, the schedule) counts those micro-batches.
      accumulate_steps=1,
  ))

  # Train section.
  c.train = ConfigDict(dict(
      steps=160_000,
      log_every=50,
      eval_every=0,  # 0: evaluate only at the end
      checkpoint_every=1000,
      keep_checkpoints=3,
      async_checkpoint=True,  # written by Orbax in the background while training goes on
      # (first, last): a JAX profiler trace of those steps and the train step's per-op table in
      # workdir/profile/ (vssjax/train/profiling.py); () = none. Steps after the first few: the
      # first step's ops run cold (the quick SegFormer's at 89.5 ms a call against 9.8 warm).
      profile_steps=(),
  ))

  # Eval section.
  c.eval = ConfigDict(dict(
      # Which mIoU the results report as "mIoU" (all three are in results.json as mIoU_<name>):
      # 'vspw' (classes present in the GT), 'mmseg' (GT or prediction) or 'all_classes' (every
      # class, an absent one counting 0: DCFM's tables); vssjax/metrics/confusion.py.
      miou_convention="vspw",
      windows=(8, 16),  # the n of mVC_n and VEC_n
      # mVC_n: 'vspw' (windows without GT-stable pixels dropped, videos of <= 16 frames skipped)
      # or 'dcfm' (those windows count 0, no video skipped); vssjax/metrics/consistency.py.
      vc_convention="vspw",
      vec_quirks=False,
      max_videos=0,  # 0: all videos of the split
      # Local devices predicting videos side by side (evaluation, infer), each its own (0: every
      # accelerator of the process, one device on a CPU backend).
      devices=0,
      # On an accelerator, compile the predictors' programs for the next videos' frame sizes in a
      # thread while the device predicts (evaluation, infer; vssjax/eval/compile_ahead.py); the
      # CPU backend's cores would do both, so it runs there only when `evaluate` is asked to.
      compile_ahead=True,
      overlay_video=True,  # evaluations and --mode=infer write one; off: metrics or labels only
      overlay_fps=8,
      # ETC's TC (specs/etc.md §6): flow-warped mIoU of consecutive predictions, flow computed on
      # the host by vssjax.flow.FlowProvider; one flow per frame pair is slow, hence off by
      # default. Published TC numbers go in published.metrics as "TC".
      temporal_consistency=False,
      tc_warp="bilinear",  # 'bilinear' (released: ids warped bilinearly, truncated) | 'nearest'
      tc_flow=ConfigDict(dict(method="dis", cache_dir="")),  # 'dis' | 'farneback'
      # A video list, one name a line: a file's path (absolute or relative to the working
      # directory) or the name of one shipped in data_pipelines/lists ('cityscapes_valsam.txt',
      # ETC's 108 snippets): TC only on the videos it names (each one of the eval split's, else
      # refused); '' = every evaluated video.
      tc_video_list="",
  ))

  # --mode=bench: () batch_sizes = (1, data.batch_size); input_size: the frames of every program,
  # the train step's crops included (() = the training crop);
  # profile: also write each JAX program's per-op time table to workdir/profile/.
  c.bench = ConfigDict(dict(dtypes=("float32", "bfloat16"), batch_sizes=(), input_size=(),
                            warmup=2, repeats=10, train_step=True, train_repeats=5, torch=True,
                            torch_compile=True, profile=False))

  # Devices: data x fsdp (data=-1: all devices fsdp leaves). Train-state sharding rules are
  # (regex over the '/'-joined state path, 'replicate' | 'fsdp'), first match wins; default
  # replicate.
  c.mesh = ConfigDict(dict(data=-1, fsdp=1))
  c.sharding_rules = ()
  # Released PyTorch weights to start from (vssjax/train/init_from.py). allow_pickle: unpickle its
  # .pth fully, and the ETC teacher's (executes code stored in them: trusted files only), as mmcv
  # files whose metadata holds Python objects need; else read weights-only. Or another vssjax
  # run to start from: `workdir` (its latest checkpoint), `config` (the config file it was trained
  # with) and `take` (a regex over the '/'-joined variable paths, e.g. params/backbone/...: the
  # variables taken; the others keep their fresh initialisation).
  c.init = ConfigDict(dict(torch_checkpoint="", allow_pickle=False, workdir="", config="",
                           take=".*"))
  # Published numbers of this exact setting (metric name -> value in %), shown next to the
  # measured ones; `assumes`: (field, value[, metric names]) of the setting that an override can
  # change (the network, DCFM's mode and K; the mIoU convention, the mIoU only), with which the
  # numbers (those named) are not shown (`report.published_for`). Configs fill all three with
  # `set_published`.
  c.published = ConfigDict(dict(source="", metrics=ConfigDict(), assumes=()))
  return c


def load_config_file(spec: str) -> ConfigDict:
  """The config of `"path/to/config.py[:arg]"`, as `--config=` would load it (e.g. a teacher's)."""
  path, _, arg = spec.partition(":")
  file = pathlib.Path(path).expanduser()
  not_config = f"{path} is not a config file: "
  no_get_config = not_config + "it defines no get_config(arg) (the project's are in configs/)"
  if file.suffix != ".py":  # a README, a checkpoint: run as Python, a SyntaxError or worse
    raise SetupError(not_config + "configs are Python files (configs/<method>/<dataset>_"
                     "<backbone>.py)")
  # Checked before running it: a script or a module of the package runs its own code (defines
  # its flags again, say) and fails far from the point. A star import may bring get_config in.
  with file.open("rb") as source:
    head = source.read(1 << 20)
  if b"get_config" not in head and b"import *" not in head:
    raise SetupError(no_get_config)
  try:
    module = runpy.run_path(str(file))
  except SyntaxError as error:  # a file in the middle of an edit
    raise SetupError(f"{path}: {error}") from None
  if not callable(module.get("get_config")):
    raise SetupError(no_get_config)
  return module["get_config"](arg or None)


def unknown_field(config: ConfigDict, path: str) -> str | None:
  """Why the override `--config.<path>` names no field of `config` (with the closest names), or
  None when it does.

  ml_collections raises that mistake during flag parsing as an AttributeError or KeyError, which
  absl does not report as a flag error; the commands say this line instead
  (`vssjax.command_line.parse_config_flags`).
  """
  node, walked = config, []
  for key in config_path.split(path):
    if not isinstance(node, ConfigDict):
      return None  # an index into a tuple or a value's attribute: not a field name
    if key not in node:
      parent = ".".join(walked) or "the config"
      close = difflib.get_close_matches(str(key), list(node.keys()))
      hint = (f"did you mean {' or '.join('.'.join([*walked, c]) for c in close)}?" if close else
              f"the fields of {parent}: {', '.join(sorted(node.keys()))}")
      return f"the config has no field {'.'.join([*walked, str(key)])}; {hint}"
    node = node[key]
    walked.append(str(key))
  return None


def record_path(workdir: str, step: int | None = None) -> epath.Path:
  """`workdir/config.json`: the record of the config a workdir's checkpoints were written with,
  which training and `vssjax.convert` write and a resume or evaluation is compared against
  (`changed_fields`). With `step`: the record of the config that checkpoint was trained with,
  `kept_record_path` of the first resume with another config at or after it, where there is one
  (a run resumed at step 2 with other settings kept `config.until_step2.json`)."""
  if step is not None:
    kept = sorted(int(match.group(1)) for match in (
        re.fullmatch(r"config\.until_step(\d+)\.json", path.name)
        for path in epath.Path(workdir).glob("config.until_step*.json")) if match)
    later = [kept_step for kept_step in kept if kept_step >= step]
    if later:
      return kept_record_path(workdir, later[0])
  return epath.Path(workdir) / "config.json"


def kept_record_path(workdir: str, step: int) -> epath.Path:
  """`workdir/config.until_step<step>.json`: the record of the training up to `step`, kept where
  a run resumed there with another config (`record_path` of the steps up to it)."""
  return epath.Path(workdir) / f"config.until_step{step}.json"


def write_record(config: ConfigDict, workdir: str) -> None:
  """Writes `config` as the workdir's record (`record_path`); call it from one process only.

  Written whole (`files.write_text_whole`): a run killed mid-write left a truncated config.json,
  which every later resume of the workdir failed to parse."""
  write_text_whole(record_path(workdir), config.to_json_best_effort(indent=2))


def read_record(workdir: str, step: int | None = None) -> dict[str, Any] | None:
  """The workdir's recorded config as JSON (`record_path`, of checkpoint `step` if given), or None
  where there is none. One that does not parse (edited or cut short by hand) is a `SetupError`
  naming it, not a traceback."""
  path = record_path(workdir, step)
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except ValueError as error:
    raise SetupError(f"{path} cannot be parsed ({error}): restore it, or delete it (training "
                     "writes it again, from the config it is run with)") from error


def as_recorded(config: ConfigDict, record: dict[str, Any]) -> tuple[ConfigDict, list[str]]:
  """`config` (a config file's) with every field whose value the record of a workdir
  (`read_record`) holds otherwise set to the record's, and those changes (`changed_fields`'
  lines): the config the workdir was written with, overrides included (a checkpoint converted
  with `model.decoder_dim=768`), which its file alone does not give. The file gives the types
  JSON loses: a list is a tuple where the file's field holds one (or none)."""
  from flax import traverse_util  # pylint: disable=import-outside-toplevel  (see _differing_fields)
  recorded = traverse_util.flatten_dict(record, sep=".")
  # Not the fields the record lacks (added to the code since): the file's value stays.
  differing = [field for field in _differing_fields(json.loads(config.to_json_best_effort()),
                                                    record) if field[0] in recorded]
  result = config.copy_and_resolve_references()
  with result.unlocked():
    for name, in_file, _ in differing:
      *sections, field = name.split(".")
      node = result
      try:
        for section in sections:
          if section not in node:
            node[section] = ConfigDict()
          node = node[section]
        node[field] = _typed_as(node.get(field), recorded[name])
      except (TypeError, AttributeError) as error:  # a file of another method: its field of
        # that name is of another type, or a value where the record holds a section
        raise SetupError(f"the record holds {name}={recorded[name]!r}, which does not fit the "
                         f"config file's {in_file} ({error}): is the file the one the run was "
                         "made with?") from error
  return result, _change_lines(differing)


def _typed_as(like: Any, value: Any) -> Any:
  """A JSON `value` as the type of the config field it replaces (`like`): a list as a tuple where
  the field holds a tuple or nothing (configs write sequences as tuples), nested alike; an int as
  a float where the field holds a float."""
  if isinstance(value, list):
    if isinstance(like, list):
      return [_typed_as(None, item) for item in value]
    items = like if isinstance(like, tuple) and len(like) == len(value) else (None,) * len(value)
    return tuple(_typed_as(item_like, item) for item_like, item in zip(items, value))
  if isinstance(like, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  return value


def changed_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """`field: old -> new` (dotted names, JSON values, `(none)` where a side lacks the field) for
  every field whose value differs between two configs as JSON: a workdir's `config.json` and a
  config's `to_json_best_effort()`, to say which settings a checkpoint was written with."""
  return _change_lines(_differing_fields(old, new))


def _differing_fields(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str, str]]:
  """(dotted name, old value, new value) as JSON, `(none)` where a side lacks the field, for each
  field whose value differs, in name order."""
  # Imported here: every config file imports this module, and flax (jax with it) takes ~1.1 s,
  # which a mistyped flag's one-line error need not wait for.
  from flax import traverse_util  # pylint: disable=import-outside-toplevel
  before = {name: json.dumps(value)
            for name, value in traverse_util.flatten_dict(old, sep=".").items()}
  after = {name: json.dumps(value)
           for name, value in traverse_util.flatten_dict(new, sep=".").items()}
  return [(name, before.get(name, "(none)"), after.get(name, "(none)"))
          for name in sorted(before.keys() | after.keys()) if before.get(name) != after.get(name)]


def _change_lines(fields: list[tuple[str, str, str]]) -> list[str]:
  return [f"{name}: {old} -> {new}" for name, old, new in fields]
