"""docs/extending.md works as written: its example files, written out as a package outside vssjax,
train and evaluate through the documented commands, its example backbone reads the weights of its
PyTorch original, and its example source reads videos."""

import json
import math
import os
import re
import shlex
import subprocess
import sys

import cv2
import jax
import numpy as np
import pytest
import torch

from data_pipelines import dataset
from data_pipelines.sources import base
from vssjax.errors import SetupError
from vssjax.methods import get_method
from vssjax.train import init_from, loop
from vssjax.train.host_init import host_filled
from tests.conftest import REPO, load_config, logged_losses, random_config_batch
from tests.data_pipelines import helpers

DOC = REPO / "docs" / "extending.md"


def _blocks(language: str, section: str | None = None) -> list[str]:
  """The doc's code blocks in `language`, those of the section titled `section` if given."""
  text = DOC.read_text()
  if section is not None:
    text = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.M | re.S).group(1)
  return re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)


def write_example_files(folder) -> list[str]:
  """Writes every python block of the doc that starts with a `# <path>.py` line to that path
  under `folder`; returns the paths."""
  paths = []
  for block in _blocks("python"):
    first_line = block.splitlines()[0]
    if re.fullmatch(r"# [\w/]+\.py", first_line):
      path = folder / first_line[2:]
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(block)
      paths.append(first_line[2:])
  return paths


def _documented_runs(section: str) -> dict[str, list[str]]:
  """The `python -m vssjax.main` commands of the doc's `section` as argument lists, by their
  --mode."""
  commands = [shlex.split(line) for block in _blocks("bash", section)
              for line in block.splitlines() if line.startswith("python -m vssjax.main ")]
  return {_flag(args, "mode"): args[3:] for args in commands}


def _flag(args: list[str], name: str) -> str:
  return next(a.split("=", 1)[1] for a in args if a.startswith(f"--{name}="))


def _run_quick(args: list[str], cwd, data_dir) -> str:
  """Runs a documented command as `python -m vssjax.main` in `cwd`, with the config's `quick`
  variant and the test session's synthetic set."""
  args = [f"{a}:quick" if a.startswith("--config=") else a for a in args]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(REPO)] + ([os.environ["PYTHONPATH"]] if "PYTHONPATH" in os.environ else [])))
  result = subprocess.run(
      [sys.executable, "-m", "vssjax.main", *args, f"--config.data.data_dir={data_dir}"],
      cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
  return result.stdout


@pytest.mark.slow
def test_worked_example_trains_and_evaluates(tmp_path, synthetic_data_dir):
  assert write_example_files(tmp_path) == [
      "my_vss/top_down.py", "my_vss/config.py", "my_vss/key_stream.py",
      "my_vss/key_stream_config.py", "my_vss/tiny_convnet.py", "my_vss/tiny_config.py",
      "my_vss/frame_folders.py"]
  runs = _documented_runs("Worked example: TopDown, a new head on the MiT backbone")
  assert sorted(runs) == ["eval", "train"]
  workdir = tmp_path / _flag(runs["train"], "workdir")
  assert _flag(runs["eval"], "workdir") == _flag(runs["train"], "workdir")

  _run_quick(runs["train"], tmp_path, synthetic_data_dir)
  assert (workdir / "checkpoints" / "2").is_dir()  # quick: 2 steps, checkpointed at the end
  losses = logged_losses(workdir)
  assert list(losses) == [1, 2] and all(map(math.isfinite, losses.values()))
  (workdir / "results.json").unlink()  # written by the evaluation at the end of training

  out = _run_quick(runs["eval"], tmp_path, synthetic_data_dir)
  assert "evaluating checkpoint of step 2" in out
  results = json.loads((workdir / "results.json").read_text())
  assert results["step"] == 2 and 0 <= results["mIoU"] <= 1  # a fraction, as results.json holds


@pytest.mark.slow
def test_streaming_example_trains_evaluates_and_benches_its_frames(tmp_path, synthetic_data_dir):
  """KeyStream's documented commands: a training and an evaluation through its own predictor (its
  keyframes scored apart too), and the bench's rows of its keyframe, its frame between and their
  average at K = 3."""
  write_example_files(tmp_path)
  runs = _documented_runs("Worked example: KeyStream, a streaming method")
  assert sorted(runs) == ["bench", "eval", "train"]
  _run_quick(runs["train"], tmp_path, synthetic_data_dir)
  workdir = tmp_path / _flag(runs["eval"], "workdir")
  (workdir / "results.json").unlink()
  _run_quick(runs["eval"], tmp_path, synthetic_data_dir)
  results = json.loads((workdir / "results.json").read_text())
  # Its keyframes and the frames between them scored apart too (the predictor's `keyframes`).
  assert all(0 <= results[name] <= 1 for name in ("mIoU", "mIoU_keyframes", "mIoU_non_key"))
  _run_quick(runs["bench"] + ["--config.bench.dtypes=('float32',)",
                              "--config.bench.train_step=False"], tmp_path, synthetic_data_dir)
  bench = json.loads((tmp_path / _flag(runs["bench"], "workdir") / "bench.json").read_text())
  rows = {row["phase"]: row for row in bench["rows"]}
  assert list(rows) == ["forward", "keyframe", "between", "video_avg_K3"]
  assert rows["between"]["gflops"] < rows["keyframe"]["gflops"]
  assert rows["video_avg_K3"]["gflops"] == pytest.approx(
      (rows["keyframe"]["gflops"] + 2 * rows["between"]["gflops"]) / 3)


def test_streaming_examples_frame_between_is_the_keyframes_prediction_on_its_features(
    tmp_path, monkeypatch):
  """On a keyframe itself, the first stage and the head on its own deeper features give the whole
  network's logits: the frames between differ from a keyframe by their deeper features alone."""
  write_example_files(tmp_path / "code")
  monkeypatch.syspath_prepend(str(tmp_path / "code"))
  config = load_config(str(tmp_path / "code" / "my_vss" / "key_stream_config.py"), "quick")
  method = get_method(config)
  variables = host_filled(jax.eval_shape(method.init, jax.random.PRNGKey(0),
                                         random_config_batch(config)))
  frames = np.random.default_rng(0).integers(0, 256, (1, 48, 64, 3), np.uint8)
  programs = method.bound_programs(variables)
  key_logits, deeper = method.frame_logits(programs, frames, None)
  between_logits, _ = method.frame_logits(programs, frames, deeper)
  np.testing.assert_allclose(between_logits, key_logits, rtol=1e-5, atol=1e-5)
  assert len(deeper) == 3
  # Its predictor runs the whole network on frames 0 and 3 alone (K = 3), the rest between.
  calls = []

  def counted(programs):
    return tuple(lambda *args, p=p, name=name: calls.append(name) or p(*args)
                 for p, name in zip(programs, ("keyframe", "first_stage", "head")))

  monkeypatch.setattr(method, "bound_programs", lambda v: counted(programs))
  predictor = method.predictor(variables)
  for t in range(5):
    assert [index for index, _ in predictor.push(frames[0])] == [t]
  assert calls == ["keyframe"] + ["first_stage", "head"] * 2 + ["keyframe"] + ["first_stage",
                                                                                 "head"]


def test_streaming_example_refuses_a_backbone_that_is_not_a_mit(tmp_path, monkeypatch):
  write_example_files(tmp_path / "code")
  monkeypatch.syspath_prepend(str(tmp_path / "code"))
  config = load_config(str(tmp_path / "code" / "my_vss" / "key_stream_config.py"), "quick")
  config.model.backbone = "my_vss.tiny_convnet:TinyConvNet"  # the guide's own, below
  config.model.backbone_overrides.update(embed_dims=(), depths=(), num_heads=())  # MiT settings
  with config.unlocked():
    config.model.tiny_widths = (8, 16, 24, 32)  # as my_vss/tiny_config.py sets it
  with pytest.raises(SetupError, match=r"KeyStream runs a MiT's first stage alone: model.backbone "
                     r"'my_vss.tiny_convnet:TinyConvNet' is not a MiT"):
    get_method(config)


@pytest.mark.slow
def test_backbone_example_trains_segformers_head_on_it(tmp_path, synthetic_data_dir, monkeypatch):
  """The documented command trains the model of the example backbone: its parameter count is
  that of SegFormer's head on TinyConvNet (not on MiT)."""
  write_example_files(tmp_path)
  monkeypatch.syspath_prepend(str(tmp_path))
  config = load_config(str(tmp_path / "my_vss" / "tiny_config.py"), "quick")
  method = get_method(config)
  assert type(method.module.backbone).__name__ == "TinyConvNet"
  variables = jax.eval_shape(method.init, jax.random.PRNGKey(0), random_config_batch(config))
  num_params = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
  runs = _documented_runs("A backbone of your own")
  assert sorted(runs) == ["train"]
  workdir = tmp_path / _flag(runs["train"], "workdir")
  out = _run_quick(runs["train"], tmp_path, synthetic_data_dir)
  assert f"{num_params / 1e6:.3f}M parameters" in out, out
  losses = logged_losses(workdir)
  assert list(losses) == [1, 2] and all(map(math.isfinite, losses.values()))
  assert 0 <= json.loads((workdir / "results.json").read_text())["mIoU"] <= 1


class _TorchTinyConvNet(torch.nn.Module):
  """The PyTorch original the doc's `TinyConvNet.convert_torch` reads: modules of its names."""

  def __init__(self, widths):
    super().__init__()
    self.stages, channels = [], 3  # each stage's conv, norm, conv, norm...: registered by name
    for stage, width in enumerate(widths, start=1):
      layers = []
      for step in range(2 if stage == 1 else 1):
        for name, module in ((f"stage{stage}_conv{step}",
                              torch.nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False)),
                             (f"stage{stage}_norm{step}", torch.nn.BatchNorm2d(width))):
          self.add_module(name, module)
          layers.append(module)
        channels = width
      self.stages.append(layers)

  def forward(self, x):
    features = []
    for layers in self.stages:
      for conv, norm in zip(layers[::2], layers[1::2]):
        x = torch.relu(norm(conv(x)))
      features.append(x)
    return features


def test_backbone_example_reads_the_weights_of_its_pytorch_original(tmp_path, synthetic_data_dir,
                                                                    monkeypatch, capsys):
  """The doc's `TinyConvNet.convert_torch` on a file of the PyTorch model it describes: the
  backbone's four features are then that model's (eval mode, its running statistics), and a
  training run started from the file (`init.torch_checkpoint`) swaps them in and keeps only the
  head fresh."""
  write_example_files(tmp_path)
  monkeypatch.syspath_prepend(str(tmp_path))
  config = load_config(str(tmp_path / "my_vss" / "tiny_config.py"), "quick")
  torch.manual_seed(0)
  original = _TorchTinyConvNet(config.model.tiny_widths).eval()
  for module in original.modules():
    if isinstance(module, torch.nn.BatchNorm2d):  # statistics and affine of a trained model
      for tensor in (module.weight, module.bias, module.running_mean, module.running_var):
        tensor.data.uniform_(0.5, 1.5)
  weights = tmp_path / "tiny_convnet.pth"
  torch.save(original.state_dict(), weights)

  method = get_method(config)
  variables = init_from.load_torch_variables(str(weights), method)
  assert "tensors, read by TinyConvNet.convert_torch" in capsys.readouterr().out
  images = np.random.default_rng(0).standard_normal((2, 64, 64, 3), np.float32)
  features = method.module.backbone.apply(
      {collection: tree["backbone"] for collection, tree in variables.items()}, images,
      train=False)
  with torch.no_grad():
    expected = original(torch.from_numpy(images.transpose(0, 3, 1, 2)))
  assert len(features) == len(expected) == 4
  for got, want in zip(features, expected):
    np.testing.assert_allclose(got, want.numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)

  config.init.torch_checkpoint = str(weights)
  config.data.data_dir = synthetic_data_dir
  loop.train_and_evaluate(config, str(tmp_path / "run"), max_steps_this_run=0)
  out = capsys.readouterr().out
  assert "read by TinyConvNet.convert_torch" in out
  assert ("kept the fresh initialisation of batch_stats/decode_head, params/decode_head\n"
          in out), out


def test_example_method_follows_the_loss_average_and_predicts_frames_alone(tmp_path, monkeypatch):
  """The settings the guide describes, which its example ignored: `method.loss_average` ('all'
  divides by every pixel, the ignored ones too) and `predicts_frames_alone` (bench timed the
  forward on whole clips)."""
  write_example_files(tmp_path / "code")
  monkeypatch.syspath_prepend(str(tmp_path / "code"))
  config = load_config(str(tmp_path / "code" / "my_vss" / "config.py"), "quick")
  method = get_method(config)
  assert method.predicts_frames_alone
  batch = random_config_batch(config)
  batch["labels"][..., ::2, :] = 255  # half the pixels ignored
  # Host-filled and jitted: run op by op, the init and the two losses took 30 s.
  variables = host_filled(jax.eval_shape(method.init, jax.random.PRNGKey(0), batch))
  params, model_state = variables["params"], {"batch_stats": variables["batch_stats"]}

  def loss(average):  # read while tracing, so each average is a trace of its own
    config.method.loss_average = average
    loss_of = jax.jit(lambda p, s, b: method.loss_and_metrics(p, s, b, jax.random.PRNGKey(1))[0])
    return float(loss_of(params, model_state, batch))

  assert loss("all") == pytest.approx(loss("valid") / 2, rel=1e-5)


def _write_video(folder, labels: list[np.ndarray | None]) -> None:
  """Frames 0000.jpg, 0001.jpg, ... and, where given, their label PNGs."""
  folder.mkdir(parents=True)
  for t, label in enumerate(labels):
    cv2.imwrite(str(folder / f"{t:04d}.jpg"), np.full((8, 12, 3), 40 * t, np.uint8))
    if label is not None:
      cv2.imwrite(str(folder / f"{t:04d}.png"), label)


def test_example_source_reads_its_folders(tmp_path, monkeypatch):
  write_example_files(tmp_path / "code")
  monkeypatch.syspath_prepend(str(tmp_path / "code"))
  label = np.array([[0, 1, 2, 255] * 3] * 8, np.uint8)
  _write_video(tmp_path / "data" / "train" / "b", [label, None])
  _write_video(tmp_path / "data" / "train" / "a", [None, None, label])
  # The config lines the doc shows, on the test's tiny data config.
  data = helpers.data_config(tmp_path, source="my_vss.frame_folders:FrameFolders",
                             backend="files", num_classes=3)
  data.frame_folders = dict(root=str(tmp_path / "data"))

  videos = dataset.make_dataset(data, "train")
  assert [videos.name(i) for i in range(len(videos))] == ["a", "b"]
  assert [videos.labeled_indices(i) for i in range(len(videos))] == [[2], [0]]
  clip = videos.load(0, [1, 2])
  assert clip["frames"].shape == (2, 8, 12, 3)
  np.testing.assert_array_equal(clip["labels"][1], label)
  assert clip["labeled"].tolist() == [False, True]


def test_a_source_whose_videos_yields_them_reads_as_one_that_lists_them(tmp_path, monkeypatch):
  """A generator was a bare "object of type 'generator' has no len()"."""
  write_example_files(tmp_path / "code")
  monkeypatch.syspath_prepend(str(tmp_path / "code"))
  source_class = base.source_class("my_vss.frame_folders:FrameFolders")
  listed = source_class.videos
  monkeypatch.setattr(source_class, "videos", lambda self, split: iter(listed(self, split)))
  _write_video(tmp_path / "data" / "train" / "a", [None, np.zeros((8, 12), np.uint8)])
  data = helpers.data_config(tmp_path, source="my_vss.frame_folders:FrameFolders",
                             backend="files", num_classes=3)
  data.frame_folders = dict(root=str(tmp_path / "data"))
  videos = dataset.make_dataset(data, "train")
  assert len(videos) == 1 and videos.labeled_indices(0) == [1]


def test_example_source_names_an_empty_video_folder(tmp_path, monkeypatch):
  """The doc promises a DataError naming the place for bad data: an empty video folder in a
  source of one's own is named (with its split's folder) when its dataset is made, not a bare
  'high <= 0' from the clip sampler."""
  write_example_files(tmp_path / "code")
  monkeypatch.syspath_prepend(str(tmp_path / "code"))
  _write_video(tmp_path / "data" / "train" / "a", [None, np.zeros((8, 12), np.uint8)])
  (tmp_path / "data" / "train" / "empty_video").mkdir()
  data = helpers.data_config(tmp_path, source="my_vss.frame_folders:FrameFolders",
                             backend="files", num_classes=3)
  data.frame_folders = dict(root=str(tmp_path / "data"))
  with pytest.raises(base.DataError, match=re.escape(
      f"video empty_video of frame_folders {tmp_path / 'data' / 'train'}: has no frames")):
    dataset.make_dataset(data, "train")
