"""End to end on CPU: torch-written checkpoints -> `python -m vssjax.convert` -> eval / fine-tune.

A random HF SegFormer with the quick config's shapes is saved by transformers (legacy key names,
safetensors) and as an mmcv-style mmseg `.pth`. Predictions of the converted workdir must equal
transformers' own argmax on a frame, and a config's published numbers must reach results.md.
"""
import contextlib
import copy
import json
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from flax import traverse_util

from data_pipelines.eval_transforms import aligned_resize
from tests.conftest import REPO, load_config
from tests.convert.mmseg_names import hf_to_mmseg
from tests.parity.hf_models import random_hf_segformer
from vssjax import configs_lib, parallel
from vssjax.convert.cli import convert_to_workdir
from vssjax.convert.mmseg_segformer import convert_mmseg_segformer
from vssjax.errors import SetupError
from vssjax.eval.evaluator import evaluate
from vssjax.methods import get_method
from vssjax.models.layers import IMAGENET_MEAN, IMAGENET_STD
from vssjax.train import init_from, loop
from vssjax.train.checkpoint import Checkpointer
from vssjax.train.state import TrainState


@pytest.fixture(scope="module")
def hf_model():
  """Unit-scale random weights (decisive logits) and head BN statistics, with the quick config's
  MiT and head shapes."""
  quick = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  arch = quick.model.backbone_overrides
  return random_hf_segformer(quick.model.backbone, arch.depths, quick.data.num_classes,
                             quick.model.decoder_dim, embed_dims=arch.embed_dims,
                             num_heads=arch.num_heads)


def _hf_labels(model, frame: np.ndarray, eval_transform) -> np.ndarray:
  """transformers' prediction with mmseg's test-time resizing (frame -> net input -> frame)."""
  resized = aligned_resize(frame, eval_transform.scale, eval_transform.size_divisor)
  images = (resized.astype(np.float32) - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
  with torch.no_grad():
    logits = model(torch.from_numpy(images).permute(2, 0, 1)[None]).logits
    logits = F.interpolate(logits, size=resized.shape[:2], mode="bilinear", align_corners=False)
    logits = F.interpolate(logits, size=frame.shape[:2], mode="bilinear", align_corners=False)
  return logits[0].argmax(0).numpy()


@pytest.mark.slow
def test_cli_converts_hf_directory_and_eval_matches_transformers(hf_model, quick_config, tmp_path):
  hf_model.save_pretrained(tmp_path / "hf")
  workdir = tmp_path / "work"
  run = subprocess.run(
      [sys.executable, "-m", "vssjax.convert",
       "--config=configs/segformer/synthetic_mitb0.py:quick", f"--checkpoint={tmp_path / 'hf'}",
       f"--workdir={workdir}", "--config.seed=0"], cwd=REPO, capture_output=True, text=True,
      check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "format hf" in run.stdout and "saved the converted weights as step 0" in run.stdout
  # The evaluation it prints has the config's overrides: another config would not fit.
  assert run.stdout.splitlines()[-1].endswith(
      "python -m vssjax.main --config=configs/segformer/synthetic_mitb0.py:quick "
      f"--config.seed=0 --workdir={workdir} --mode=eval")
  with pytest.raises(SetupError, match=r"is not empty \(it holds checkpoints, config\.json\)"):
    convert_to_workdir(quick_config, str(tmp_path / "hf"), str(workdir))
  # The config is recorded as training records it, so a misfitting one is named field by field.
  recorded = json.loads((workdir / "config.json").read_text())
  assert [change.split(":")[0] for change in configs_lib.changed_fields(
      recorded, json.loads(quick_config.to_json_best_effort()))] == ["data.data_dir"]
  misfit = copy.deepcopy(quick_config)
  misfit.model.decoder_dim = 16
  with pytest.raises(SetupError, match=r"\n  model\.decoder_dim: 32 -> 16\n"):
    loop.evaluate_checkpoint(misfit, str(workdir))
  # The model's variables alone are saved, no optimizer state: nothing trains from them in place.
  abstract, _, _, _ = loop.create_state(quick_config, get_method(quick_config),
                                        parallel.mesh_from_config(quick_config), abstract=True)
  with contextlib.closing(Checkpointer(str(workdir), create=False)) as checkpointer:
    saved = checkpointer.mismatched_arrays(abstract, 0)
  assert saved and all(name.startswith("opt_state/") for name in saved)
  with pytest.raises(SetupError, match=r"holds converted weights \(step 0"):
    loop.train_and_evaluate(quick_config, str(workdir))

  method, variables, step = loop.restore_for_eval(quick_config, str(workdir))
  assert step == 0
  frame = np.random.default_rng(0).integers(0, 256, (50, 70, 3), np.uint8)
  [(index, labels)] = method.predictor(variables).push(frame)
  expected = _hf_labels(hf_model, frame, quick_config.data.eval_transform)
  assert index == 0 and labels.shape == (50, 70)
  assert len(np.unique(expected)) > 3  # a degenerate (constant) prediction would prove nothing
  np.testing.assert_array_equal(labels, expected)

  # What --mode=eval does next (`loop.evaluate_checkpoint`), with a VSPW config's published
  # numbers, as if of this network: they must reach results.md next to the measured ones.
  published = load_config("configs/segformer/vspw_mitb0.py").published
  configs_lib.set_published(quick_config, published.source, published.metrics)
  quick_config.eval.overlay_video = False
  results = evaluate(method, variables, quick_config, workdir=str(workdir), step=step)
  table = (workdir / "results.md").read_text()
  assert f"| mIoU (%) | {100 * results['mIoU']:.2f} | 32.90 |" in table
  assert "| mVC_16 (%) |" in table and "| 77.30 |" in table
  assert "Table II" in table and "measured by DCFM" in table


def test_a_used_or_unusable_workdir_is_refused(hf_model, quick_config, tmp_path):
  """A training run's workdir before its first checkpoint (its record would be overwritten), a
  file, or a path where no directory can be made: one line each, not an OSError traceback."""
  state = {k: v.numpy() for k, v in hf_model.state_dict().items()}
  torch.save({k: torch.from_numpy(v) for k, v in hf_to_mmseg(state).items()}, tmp_path / "w.pth")
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text("{}")
  (run / ".train.lock").write_text("")
  with pytest.raises(SetupError, match=r"^--workdir=.*/run is not empty \(it holds \.train\.lock, "
                                       r"config\.json\): convert into a new or empty directory$"):
    convert_to_workdir(quick_config, str(tmp_path / "w.pth"), str(run))
  assert (run / "config.json").read_text() == "{}"
  with pytest.raises(SetupError, match=r"w\.pth is a file: convert into a new or empty"):
    convert_to_workdir(quick_config, str(tmp_path / "w.pth"), str(tmp_path / "w.pth"))
  with pytest.raises(SetupError, match=r"w\.pth/work cannot be made a directory"):
    convert_to_workdir(quick_config, str(tmp_path / "w.pth"), str(tmp_path / "w.pth" / "work"))


class _MmcvConfig:  # stands in for the mmcv objects some checkpoints' `meta` holds
  pass


@pytest.mark.slow
def test_finetuning_starts_from_an_mmseg_checkpoint(hf_model, quick_config, tmp_path):
  """From an mmcv file whose metadata needs full unpickling, which training is told to trust."""
  state = {k: v.numpy() for k, v in hf_model.state_dict().items()}
  torch.save({"meta": {"config": _MmcvConfig()}, "state_dict": {
      k: torch.from_numpy(v) for k, v in hf_to_mmseg(state).items()}}, tmp_path / "w.pth")
  quick_config.init.torch_checkpoint = str(tmp_path / "w.pth")
  quick_config.init.allow_pickle = True
  quick_config.optim.lr = 0.0  # AdamW with lr 0 leaves the parameters exactly as loaded
  loop.train_and_evaluate(quick_config, str(tmp_path / "run"), max_steps_this_run=1)
  method, trained, step = loop.restore_for_eval(quick_config, str(tmp_path / "run"))
  assert step == 1
  expected = convert_mmseg_segformer(hf_to_mmseg(state), method.module)["params"]
  flat_trained = traverse_util.flatten_dict(trained["params"], sep="/")
  for path, value in traverse_util.flatten_dict(expected, sep="/").items():
    np.testing.assert_array_equal(flat_trained[path], value, err_msg=path)


def test_imagenet_backbone_checkpoint_initialises_only_the_backbone(hf_model, quick_config,
                                                                   capsys):
  """NVlabs `mit_b*.pth` layout: bare MiT keys plus the ImageNet `head` classifier."""
  mmseg = hf_to_mmseg({k: v.numpy() for k, v in hf_model.state_dict().items()})
  imagenet = {k.removeprefix("backbone."): v for k, v in mmseg.items() if k.startswith("backbone.")}
  imagenet["head.weight"] = np.zeros((1000, 32), np.float32)
  assert init_from.detect_format(imagenet) == "mmseg" and init_from.is_backbone_only(imagenet)
  method = get_method(quick_config)
  converted = init_from.convert_state_dict(imagenet, method)
  assert list(converted) == ["params"] and list(converted["params"]) == ["backbone"]

  fresh = jax.eval_shape(lambda: method.init(jax.random.PRNGKey(0), jax.tree.map(
      lambda s: jax.numpy.zeros(s.shape, s.dtype), loop.batch_spec(quick_config))))
  fresh = jax.tree.map(lambda s: np.full(s.shape, 7.0, s.dtype), fresh)
  params = fresh.pop("params")
  tx = optax.adam(1e-3)
  state = TrainState(step=np.int32(0), params=params, model_state=fresh,
                     opt_state=tx.init(params))
  # The head is missing, so the convert CLI initialises a state for it (a full file would not).
  assert not init_from.replaces_every_variable(state, converted)
  assert init_from.replaces_every_variable(state, init_from.convert_state_dict(mmseg, method))
  merged = init_from.state_with_variables(state, converted, tx, None)
  assert "kept the fresh initialisation of batch_stats/decode_head, params/decode_head" in (
      capsys.readouterr().out)
  np.testing.assert_array_equal(merged.params["backbone"]["patch_embed2"]["proj"]["kernel"],
                                imagenet["patch_embed2.proj.weight"].transpose(2, 3, 1, 0))
  assert all((np.asarray(x) == 7.0).all() for x in jax.tree.leaves(merged.params["decode_head"]))
