"""Tests for vssjax/train/config_record.py: what a workdir's config record says about a run."""

import pytest

from tests.conftest import load_config
from vssjax import configs_lib
from vssjax.train import config_record


@pytest.fixture
def recorded(tmp_path):
  """(workdir, config): a workdir whose record is the quick SegFormer config."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  configs_lib.write_record(config, str(tmp_path))
  return str(tmp_path), config


def _changed(config, **fields):
  changed = config.copy_and_resolve_references()
  with changed.unlocked():
    for dotted, value in fields.items():
      section, name = dotted.split("__")
      changed[section][name] = value
  return changed


def test_a_mismatched_checkpoint_without_a_record_says_its_fields_cannot_be_listed(tmp_path):
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  assert config_record.mismatch_explanation(str(tmp_path), config, 5) == (
      f"{tmp_path / 'config.json'} does not exist, so the differing config fields cannot be "
      "listed.")


def test_a_mismatched_checkpoint_of_the_same_config_blames_the_code(recorded):
  workdir, config = recorded
  assert config_record.mismatch_explanation(workdir, config, 5).endswith(
      "records this same config: the checkpoint was written by other code.")


def test_a_long_listing_of_differing_fields_ends_with_a_count(recorded, monkeypatch):
  """A checkpoint of another model differs in dozens of fields: the first few, then a count."""
  workdir, config = recorded
  monkeypatch.setattr(config_record, "MAX_LISTED_FIELDS", 2)
  changed = _changed(config, train__steps=7, optim__lr=0.5, model__decoder_dim=8)
  lines = config_record.mismatch_explanation(workdir, changed, 5).splitlines()
  assert lines[0].startswith("Config fields that differ between") and len(lines) == 4
  assert lines[-1] == "  ... and 1 more"


def test_a_resume_with_a_changed_config_keeps_the_record_it_was_trained_with(recorded, capsys):
  workdir, config = recorded
  first = configs_lib.record_path(workdir).read_text()
  config_record.keep_record_of_changed_config(workdir, _changed(config, train__steps=7), 4)
  assert configs_lib.kept_record_path(workdir, 4).read_text() == first
  assert "resuming at step 4 with changed config field" in capsys.readouterr().out
  config_record.keep_record_of_changed_config(workdir, config, 6)  # unchanged: nothing kept
  assert not configs_lib.kept_record_path(workdir, 6).exists()


def test_an_evaluation_with_an_unreadable_record_says_so_and_compares_nothing(recorded, capsys):
  workdir, config = recorded
  configs_lib.record_path(workdir).write_text("{cut sho")
  assert config_record.said_eval_changes(workdir, _changed(config, train__steps=7), 4) == []
  assert "cannot be parsed" in capsys.readouterr().out


def test_an_evaluation_lists_only_the_changed_fields_its_predictions_read(recorded, capsys):
  """A run trained with `train.steps=30` and evaluated with its config file listed the schedule,
  the logging and the optimiser among the evaluation's changes; they change no prediction."""
  workdir, config = recorded
  changed = _changed(config, train__steps=7, optim__lr=0.5, bench__train_step=False,
                     published__source="another paper", eval__max_videos=3)
  assert config_record.said_eval_changes(workdir, changed, 4, kept_in="each run.json") == [
      f"eval.max_videos: {config.eval.max_videos} -> 3"]
  assert capsys.readouterr().out.splitlines()[0].endswith("kept in each run.json):")
  assert config_record.said_eval_changes(workdir, _changed(config, train__steps=7), 4) == []
  assert len(config_record.mismatch_explanation(workdir, changed, 4).splitlines()) == 6


def test_a_checkpoint_before_two_kept_records_is_compared_with_the_first_after_it(tmp_path):
  """A run resumed with other settings at step 2 and again at step 6: step 1's checkpoint was
  trained with the config kept at step 2; step 7's with the current one."""
  for step in (2, 6):
    configs_lib.kept_record_path(str(tmp_path), step).write_text("{}")
  assert configs_lib.record_path(str(tmp_path), 1).name == "config.until_step2.json"
  assert configs_lib.record_path(str(tmp_path), 3).name == "config.until_step6.json"
  assert configs_lib.record_path(str(tmp_path), 7).name == "config.json"
