"""Every config file loads, is locked against typos, builds its method, and (quick variant) its
model."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from etils import epath

from data_pipelines import eval_transforms
from tests.conftest import REPO, load_config
from vssjax import configs_lib
from vssjax.errors import SetupError
from vssjax.eval import report
from vssjax.methods import get_method
from vssjax.train.loop import batch_spec

CONFIGS = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.py"))


def test_configs_exist():
  assert "configs/segformer/synthetic_mitb0.py" in CONFIGS


@pytest.mark.parametrize("path", CONFIGS)
def test_config_builds_model(path):
  config = load_config(path, "quick")
  with pytest.raises(AttributeError):
    config.trian = 1  # locked: a typo is an error, not a silently ignored field
  method = get_method(config)
  spec = batch_spec(config)
  variables = jax.eval_shape(
      lambda: method.init(jax.random.PRNGKey(0),
                          {k: jax.numpy.zeros(s.shape, s.dtype) for k, s in spec.items()}))
  assert jax.tree.leaves(variables["params"])


@pytest.mark.parametrize("path", CONFIGS)
def test_full_config_builds_its_method(path):
  """The configs as published (no argument): the wiring the quick variants replace (teachers,
  published numbers, real sizes) holds together."""
  config = load_config(path)
  method = get_method(config)
  spec = batch_spec(config)
  assert spec["frames"].shape[0] == config.data.batch_size and method.num_classes > 0


def test_parse_arg_types_and_errors():
  args = configs_lib.parse_arg("quick,steps=7,lr=0.5", quick=False, steps=1, lr=1.0, name="x")
  assert args.quick is True and args.steps == 7 and args.lr == 0.5 and args.name == "x"
  with pytest.raises(ValueError, match="unknown config argument 'stpes'"):
    configs_lib.parse_arg("stpes=3", steps=1)
  with pytest.raises(ValueError, match="needs a value"):
    configs_lib.parse_arg("steps", steps=1)
  assert configs_lib.parse_arg("quick=Off,full=YES", quick=True, full=False).to_dict() == {
      "quick": False, "full": True}
  assert configs_lib.parse_arg("quick,", quick=False).quick  # a trailing comma is no argument
  with pytest.raises(ValueError, match=r"config argument quick='flase': not a bool \(true or "):
    configs_lib.parse_arg("quick=flase", quick=True)  # was taken as False


@pytest.mark.parametrize("path,arg,encoder_lr,decoder_lr", [
    ("configs/dcfm/vspw_mitb2.py", None, 6e-5, 6e-4),
    ("configs/dcfm/vspw_mitb5.py", None, 4e-5, 6e-4),
    ("configs/dcfm/vspw_mitb5.py", "table1", 3e-5, 3e-4),
])
def test_dcfm_vspw_learning_rates_follow_the_release(path, arg, encoder_lr, decoder_lr):
  """specs/dcfm.md §6.1: B5's encoder trains slower than B2's, its decoder at the same 6e-4."""
  config = load_config(path, arg)
  (pattern, lr_mult, _), = config.optim.param_groups
  assert pattern == "^(bot_aspp|ffm|final)/"
  assert config.optim.lr == encoder_lr
  assert config.optim.lr * lr_mult == pytest.approx(decoder_lr)


@pytest.mark.parametrize("path", [p for p in CONFIGS
                                  if p.startswith("configs/dcfm/") and "synthetic" not in p])
def test_dcfm_release_configs_use_dcfm_poly_scheduler(path):
  """specs/dcfm.md §6.1: every DCFM run (MiT and ResNet alike) uses the release's own
  PolyScheduler, whose warm-up ramps the base lr and whose poly decay runs over the steps after
  it; not mmcv's poly-times-warm-up."""
  assert load_config(path).optim.poly_after_warmup


@pytest.mark.parametrize("path", CONFIGS)
def test_only_dcfm_release_configs_use_dcfm_eval_conventions(path):
  """DCFM's tables average mIoU over all classes and score its own mVC (specs/dcfm.md §7), and on
  VSPW at exactly 480x853 (§6.2); ETC's Cityscapes and CamVid configs average mIoU over all
  classes as its test code does; every other config keeps the project's defaults."""
  config = load_config(path)
  dcfm_release = path.startswith("configs/dcfm/") and "synthetic" not in path
  expected = ("all_classes", "dcfm") if dcfm_release else ("vspw", "vspw")
  if path.startswith(("configs/etc/cityscapes", "configs/etc/camvid")):  # ETC's test code
    expected = ("all_classes", "vspw")
  assert (config.eval.miou_convention, config.eval.vc_convention) == expected
  vspw = dcfm_release and "vspw" in path
  assert tuple(config.data.eval_transform.exact_size) == ((480, 853) if vspw else ())
  assert tuple(load_config(path, "quick").data.eval_transform.exact_size) == ()


@pytest.mark.parametrize("path", CONFIGS)
def test_train_geometry_follows_each_release_library(path):
  """DCFM augments with torchvision's transforms on PIL images, its VSPW resize ignoring the
  aspect ratio (specs/dcfm.md §6.2); ETC with hszhao/semseg's; the mmseg-based rest with
  mmseg's."""
  config = load_config(path)
  dcfm_release = path.startswith("configs/dcfm/") and "synthetic" not in path
  geometry = ("torchvision" if dcfm_release else "semseg" if path.startswith("configs/etc/")
              else "mmseg")
  assert config.data.train_transform.geometry == geometry
  assert config.data.train_transform.keep_ratio == (not (dcfm_release and "vspw" in path))


@pytest.mark.parametrize("backbone, test_size", [
    ("mitb1", 512), ("r18", 1024), ("r50", 768), ("r101", 768)])
def test_dcfm_cityscapes_test_sizes_follow_the_release(backbone, test_size):
  """specs/dcfm.md §6.1-6.2: shorter side 512 (MiT-B1) or 768 (R-50/101), but R-18's infer.yaml
  tests at 1024, the full frame; training crops stay at 512 / 768."""
  config = load_config(f"configs/dcfm/cityscapes_{backbone}.py")
  assert tuple(config.data.eval_transform.scale) == (2 * test_size, test_size)
  assert config.data.train_transform.crop_size[0] == (512 if backbone == "mitb1" else 768)
  assert config.data.eval_transform.resize_backend == "pillow"  # torchvision on PIL images
  # h-flip TTA only where the release's infer.yaml sets use_flip.
  assert config.method.eval_flip == (backbone == "r101")


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.startswith("configs/etc/")])
def test_etc_quick_variants_run_without_a_trained_teacher_or_real_video_names(path):
  """A distilling quick variant keeps a random teacher if given none (a smoke run, not a
  distillation; never outside `quick`), and scores TC on every synthetic video: a real set's TC
  list names none of them."""
  full, quick = load_config(path), load_config(path, "quick")
  assert not full.method.teacher.smoke_run_random_init
  assert quick.method.teacher.smoke_run_random_init == bool(full.method.teacher.config)
  assert quick.eval.tc_video_list == ""


@pytest.mark.parametrize("path", [p for p in CONFIGS if "camvid" in p])
def test_camvid_configs_evaluate_the_test_split_and_their_quick_variants_val(path):
  """The published CamVid rows are on test (DCFM's Table IV; ETC and SD-CPC presumably); the
  quick variants' synthetic set has no test split."""
  assert load_config(path).data.eval_split == "test"
  assert load_config(path, "quick").data.eval_split == "val"


@pytest.mark.parametrize("variant", ["b0", "b1"])
def test_segformer_cityscapes_scores_the_annotated_frames_whole_at_512x1024(variant):
  """The published 71.9 / 74.1 are SegFormer's real-time setting: the whole 1024x2048 frame
  resized to 512x1024 (no sliding window), one annotated frame at a time."""
  config = load_config(f"configs/segformer/cityscapes_mit{variant}.py")
  frame = np.zeros((1024, 2048, 3), np.uint8)
  transform = config.data.eval_transform
  resized = eval_transforms.aligned_resize(frame, transform.scale, transform.size_divisor)
  assert resized.shape == (512, 1024, 3)
  assert get_method(config).sliding_windows is None
  assert tuple(config.data.train_transform.crop_size) == (512, 1024)
  assert tuple(config.data.eval_label_window) == (0, 0)
  assert config.data.num_classes == 19


@pytest.mark.parametrize("variant", ["b0", "b1", "b2", "b3", "b4", "b5"])
def test_segformer_cityscapes1024_scores_full_frames_in_three_1024_windows(variant):
  """SegFormer's 1024x1024 setting: trained on 1024x1024 crops, tested on the full-resolution
  frame in 1024x1024 windows every 768 pixels (mmseg's 'slide' mode), with the release's
  decoder width (256 for B0/B1, 768 above)."""
  config = load_config(f"configs/segformer/cityscapes1024_mit{variant}.py")
  transform = config.data.eval_transform
  resized = eval_transforms.aligned_resize(np.zeros((1024, 2048, 3), np.uint8), transform.scale,
                                           transform.size_divisor)
  assert resized.shape == (1024, 2048, 3)
  windows = get_method(config).sliding_windows
  assert windows.offsets((1024, 2048)) == ((0, 0), (0, 768), (0, 1024))
  assert windows.window_hw((1024, 2048)) == (1024, 1024)
  assert tuple(config.data.train_transform.crop_size) == (1024, 1024)
  assert tuple(config.data.eval_label_window) == (0, 0)
  assert config.model.decoder_dim == (256 if variant in ("b0", "b1") else 768)
  assert config.published.metrics.mIoU > 75


def test_unknown_field_names_the_closest_fields():
  """The line the commands print for an override that names no field (vssjax/command_line.py)."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  assert configs_lib.unknown_field(config, "train.steps") is None
  assert configs_lib.unknown_field(config, "optim.param_groups[0]") is None  # an index, no field
  assert configs_lib.unknown_field(config, "data.synthetic.heigth") == (
      "the config has no field data.synthetic.heigth; did you mean data.synthetic.height?")
  assert configs_lib.unknown_field(config, "mesh.zzz") == (
      "the config has no field mesh.zzz; the fields of mesh: data, fsdp")


def test_loading_a_config_does_not_import_jax():
  """A mistyped flag's one-line error waited ~1.1 s for flax and jax, which only the field
  diff of a workdir's recorded config needs."""
  code = ("import sys; from vssjax import configs_lib; "
          "configs_lib.load_config_file('configs/segformer/synthetic_mitb0.py'); "
          "print(sorted({'jax', 'flax'} & set(sys.modules)))")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=True)
  assert result.stdout.strip() == "[]"


def test_a_config_file_takes_a_workdirs_recorded_values_with_the_files_types():
  """init.workdir's run restores with its record's values on init.config's file (its overrides:
  a head converted 768 wide); JSON's lists come back as the file's tuples, nested ones too, and
  an int as the float the file holds. A field the record lacks keeps the file's value."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  record = json.loads(config.to_json_best_effort())
  record["model"]["decoder_dim"] = 768
  record["data"]["eval_transform"]["slide_crop"] = [48, 48]
  record["optim"]["lr"] = 1
  del record["eval"]["max_videos"]
  recorded, changes = configs_lib.as_recorded(config, record)
  assert changes == ["data.eval_transform.slide_crop: [] -> [48, 48]",
                     f"model.decoder_dim: {config.model.decoder_dim} -> 768",
                     f"optim.lr: {json.dumps(config.optim.lr)} -> 1"]
  assert recorded.model.decoder_dim == 768 and recorded.data.eval_transform.slide_crop == (48, 48)
  assert recorded.optim.lr == 1.0 and isinstance(recorded.optim.lr, float)
  assert recorded.eval.max_videos == config.eval.max_videos
  assert configs_lib.as_recorded(config, json.loads(config.to_json_best_effort())) == (config, [])
  nested = configs_lib.ConfigDict(dict(windows=((1, 2), (3, 4)), names=["a"]))
  recorded, _ = configs_lib.as_recorded(nested, dict(windows=[[5, 6]], names=["b", "c"]))
  assert recorded.windows == ((5, 6),) and recorded.names == ["b", "c"]
  with pytest.raises(SetupError, match=r"the record holds names=3, which does not fit the config "
                     r"file's \[.a.\] .*: is the file the one the run was made with\?"):
    configs_lib.as_recorded(nested, dict(names=3))
  with pytest.raises(SetupError, match=r"the record holds names.first='b', .* file's \(none\)"):
    configs_lib.as_recorded(nested, dict(names=dict(first="b")))


def test_changed_fields_lists_dotted_fields_old_to_new():
  """What a "written with a different config" error lists (vssjax/train/loop.py)."""
  old = {"train": {"steps": 600, "log_every": 25}, "model": {"depths": [1, 2]}, "seed": 0}
  new = {"train": {"steps": 2, "log_every": 25}, "model": {"depths": [1, 1]}, "name": "x"}
  assert configs_lib.changed_fields(old, new) == [
      "model.depths: [1, 2] -> [1, 1]", 'name: (none) -> "x"', "seed: 0 -> (none)",
      "train.steps: 600 -> 2"]
  assert configs_lib.changed_fields(old, old) == []


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.startswith("configs/segformer/")
                                  and "synthetic" not in p and "vtest" not in p])
def test_segformer_release_configs_average_the_loss_over_all_pixels(path):
  """The NVlabs SegFormer code is mmseg 0.13, whose cross-entropy (`weight_reduce_loss`, reduction
  'mean') divides by every pixel of the batch, ignored ones included, as DTERN's and SD-CPC's
  VSPW configs (same code family) already do; the synthetic demo keeps 'valid'."""
  assert load_config(path).method.loss_average == "all"


def test_sdcpc_cityscapes_resnet_trains_and_tests_at_full_resolution():
  """A dilated ResNet-101's published 81.6 is not a half-resolution number: the ResNet config
  takes mmseg's full-frame geometry, the MiT one keeps CFFM's (1024, 512)."""
  r101, mit = (load_config(f"configs/sdcpc/cityscapes_{b}.py").data for b in ("r101", "mitb1"))
  assert tuple(r101.train_transform.scale) == tuple(r101.eval_transform.scale) == (2048, 1024)
  assert tuple(r101.train_transform.crop_size) == (512, 1024)
  assert tuple(mit.train_transform.scale) == tuple(mit.eval_transform.scale) == (1024, 512)


@pytest.mark.parametrize("path", ["configs/sdcpc/cityscapes_r101.py",
                                  "configs/sdcpc/camvid_r101.py"])
def test_sdcpc_resnet_configs_test_frames_without_stretching_them(path):
  """mmseg's dilated-ResNet test pipeline resizes keeping the ratio, no sides aligned to 32 (the
  MiT recipe's AlignedResize stretched CamVid's 720x960 frames to 736x960)."""
  data = load_config(path).data
  height, width = (1024, 2048) if "cityscapes" in path else (720, 960)
  frame = np.zeros((height, width, 3), np.uint8)
  assert eval_transforms.eval_resize(frame, data.eval_transform).shape[:2] == (height, width)


@pytest.mark.parametrize("path", ["configs/sdcpc/cityscapes_r101.py",
                                  "configs/sdcpc/camvid_r101.py"])
def test_sdcpc_resnet_configs_follow_mmseg_80k_schedule(path):
  """resnet_recipe says mmseg's dilated-ResNet recipe: its schedule_80k.py is SGD 0.01 (momentum
  0.9, wd 5e-4, no param groups) and poly p=0.9 to min_lr 1e-4 over 80k iterations, with no
  warm-up (base_config's 1500-step AdamW warm-up must not leak in)."""
  optim = load_config(path).optim
  assert (optim.name, optim.lr, optim.momentum, optim.weight_decay) == ("sgd", 1e-2, 0.9, 5e-4)
  assert (optim.power, optim.min_lr, tuple(optim.param_groups)) == (0.9, 1e-4, ())
  assert optim.warmup_steps == 0 and not optim.poly_after_warmup
  assert load_config(path).train.steps == 80_000


def test_etc_teacher_trains_semseg_cityscapes_iterations():
  """semseg's cityscapes_pspnet101.yaml: batch 16 on 8 GPUs (2 each), 200 epochs; its
  DistributedSampler pads 2,975 frames to 8 x 372, so max_iter = 200 * 186 = 37,200 (as the ETC
  student's 74,400 = 200 * 372 counts its 4-GPU padding)."""
  config = load_config("configs/etc/cityscapes_psp101.py")
  assert config.data.batch_size == 16
  assert config.train.steps == 200 * (-(-2975 // 8) // 2) == 37_200
  assert load_config("configs/etc/cityscapes_psp18_baseline.py").train.steps == (
      200 * (-(-2975 // 4) // 2))


def test_dtern_cityscapes_frame_loss_scores_the_target_frame_only():
  """specs/dtern.md §6: the release's `cityscape=True` branch of `BaseDecodeHead_clips2.losses`
  scores the SegFormer branch on the target frame's logits alone (`seg_logit[:, T-1:T]` against
  `seg_label[:, -1]`), not every frame against the target's repeated labels; VSPW scores every
  frame against its own."""
  assert load_config("configs/dtern/cityscapes_mitb1.py").method.frame_loss_target_only is True
  assert load_config("configs/dtern/vspw_mitb0.py").method.frame_loss_target_only is False


def test_cityscapes_clip_methods_predict_the_annotated_frame_from_its_clip_only():
  """DTERN's and SD-CPC's Cityscapes clips are [a-9, a-6, a-3, a] around the annotated frame a:
  the evaluation predicts the window [a-9, a], not the whole 30-frame snippet."""
  for path in ("configs/dtern/cityscapes_mitb1.py", "configs/sdcpc/cityscapes_mitb1.py"):
    assert tuple(load_config(path).data.eval_label_window) == (9, 0), path


def test_a_config_record_cut_short_is_never_left_and_one_that_does_not_parse_is_named(
    tmp_path, monkeypatch):
  """A run killed while writing config.json left it truncated, and every later resume was a
  JSONDecodeError traceback: it is written beside and renamed, and a damaged one is named."""
  config = configs_lib.base_config()
  configs_lib.write_record(config, str(tmp_path))
  configs_lib.write_record(config, str(tmp_path))  # over the first (a resume)
  recorded = (tmp_path / "config.json").read_text()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]

  def killed_midway(path, text, *args, **kwargs):  # pylint: disable=unused-argument
    with open(path, "w", encoding="utf-8") as f:
      f.write(text[:50])
    raise KeyboardInterrupt

  monkeypatch.setattr(epath.Path, "write_text", killed_midway)
  with pytest.raises(KeyboardInterrupt):
    configs_lib.write_record(config, str(tmp_path))
  monkeypatch.undo()
  assert (tmp_path / "config.json").read_text() == recorded

  (tmp_path / "config.json").write_text(recorded[:50])
  with pytest.raises(SetupError, match=r"config\.json cannot be parsed .*: restore it, or delete"):
    configs_lib.read_record(str(tmp_path))


# Table II of the DCFM paper (specs/paper_numbers.md): the SegFormer rows' parameters, millions.
_TABLE_II_SEGFORMER_MILLIONS = {"b0": 3.8, "b1": 13.8, "b2": 24.8, "b5": 82.1}


@pytest.mark.parametrize("variant", sorted(_TABLE_II_SEGFORMER_MILLIONS))
def test_segformer_vspw_configs_have_the_parameter_count_of_their_published_rows(variant):
  """The VSPW configs carry Table II's numbers, measured on 256-wide heads for every variant: the
  count of the configured model is within the table's rounding (and B2's/B5's 768-wide SegFormer
  head would be 2.7 M over)."""
  config = load_config(f"configs/segformer/vspw_mit{variant}.py")
  method = get_method(config)
  frames = jax.ShapeDtypeStruct((1, 1, 64, 64, 3), np.uint8)
  params = jax.eval_shape(lambda f: method.init(jax.random.key(0), {"frames": f}), frames)[
      "params"]
  millions = sum(x.size for x in jax.tree.leaves(params)) / 1e6
  assert abs(millions - _TABLE_II_SEGFORMER_MILLIONS[variant]) < 0.1, millions


def test_quick_variants_compare_with_no_published_numbers():
  """A 2-step run on the tiny synthetic set next to a paper's mIoU would read as a failed
  reproduction: no `:quick` variant's results table carries published numbers, nor a line about
  them, although full configs do publish some."""
  assert any(report.published_for(load_config(path))[0] is not None for path in CONFIGS)
  for path in CONFIGS:
    assert report.published_for(load_config(path, "quick")) == (None, ""), path


def test_a_config_file_compares_with_every_number_it_publishes():
  """`set_published` records the settings the numbers are of: one called before the config sets
  its mIoU convention (or network) would leave its own numbers out of every run of it."""
  published_configs = [config for config in map(load_config, CONFIGS)
                       if len(config.published.metrics)]
  assert len(published_configs) > 10
  for config in published_configs:
    published, not_compared = report.published_for(config)
    assert (published, not_compared) == (config.published, ""), not_compared
