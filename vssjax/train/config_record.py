"""What a workdir's config record (`config.json`, `config.until_step<N>.json`) says about the run
at hand: the fields it changed since the checkpoint was trained (a resume with more steps, an
evaluation with another keyframe interval, a checkpoint whose arrays do not fit), said in the
same `field: recorded -> now` lines everywhere (`configs_lib.changed_fields`)."""

from __future__ import annotations

import json

from vssjax import configs_lib
from vssjax.configs_lib import ConfigDict
from vssjax.errors import SetupError
from vssjax.files import write_text_whole

# How many differing config fields a listing shows before a count of the others.
MAX_LISTED_FIELDS = 20

# Fields that shape a training (its schedule, optimiser, augmentation), a benchmark or the
# published numbers shown beside the results only: the predictions of a trained checkpoint read
# none of them, so an evaluation does not list them (a run trained with `train.steps=30` and
# evaluated with the config file's 160000 changed nothing; DCFM's `:mode=P` brings its own
# published numbers).
_NOT_READ_BY_PREDICTIONS = ("train.", "optim.", "bench.", "data.train_transform.", "published.")


def changes_since_training(workdir: str, config: ConfigDict, step: int | None = None, *,
                           leave_out: tuple[str, ...] = ()) -> list[str] | None:
  """`field: recorded -> now` for each field of `config` that differs from the workdir's record
  (that of checkpoint `step`, if given: `configs_lib.record_path`), but those whose names start
  with one of `leave_out`, at most MAX_LISTED_FIELDS, then a count; None where no config is
  recorded."""
  record = configs_lib.read_record(workdir, step)
  if record is None:
    return None
  changes = [change for change in
             configs_lib.changed_fields(record, json.loads(config.to_json_best_effort()))
             if not change.startswith(leave_out)]
  return _capped(changes)


def _capped(changes: list[str]) -> list[str]:
  """At most MAX_LISTED_FIELDS of `changes`, then a count of the others."""
  if len(changes) > MAX_LISTED_FIELDS:
    return changes[:MAX_LISTED_FIELDS] + [f"... and {len(changes) - MAX_LISTED_FIELDS} more"]
  return changes


def _listed(header: str, changes: list[str]) -> str:
  return "\n".join([header, *(f"  {change}" for change in changes)])


def mismatch_explanation(workdir: str, config: ConfigDict, step: int) -> str:
  """Lines that say which fields of `config` differ from the config checkpoint `step` was
  trained with, for a checkpoint whose arrays do not fit."""
  recorded = configs_lib.record_path(workdir, step)
  changes = changes_since_training(workdir, config, step)
  if changes is None:
    return f"{recorded} does not exist, so the differing config fields cannot be listed."
  if not changes:
    return f"{recorded} records this same config: the checkpoint was written by other code."
  return _listed(f"Config fields that differ between {recorded} and this run (recorded -> now):",
                 changes)


def as_recorded_in(workdir: str, config: ConfigDict, named: str) -> ConfigDict:
  """`config`, the config file `named` says a workdir's run was made with, with the values its
  record holds instead, said (`configs_lib.as_recorded`): the run's own overrides (a checkpoint
  converted with `model.decoder_dim=768`) restore its arrays, which the file alone does not."""
  record = configs_lib.read_record(workdir)
  if record is None:
    return config
  config, changes = configs_lib.as_recorded(config, record)
  if changes:
    print(_listed(f"restoring {workdir} with the values of its record "
                  f"{configs_lib.record_path(workdir)} where {named} holds others ({named} -> "
                  "record):", _capped(changes)), flush=True)
  return config


def keep_record_of_changed_config(workdir: str, config: ConfigDict, step: int) -> None:
  """A resume with other settings (more steps, another learning rate) is allowed, but said, and
  the record of what the steps so far were trained with is kept (`configs_lib.kept_record_path`)
  before `config.json` is rewritten (not over one already kept at that step: a changed run that
  stopped before its next checkpoint trained nothing the first record does not describe). The
  changes are those since checkpoint `step`'s record: config.json may be that of such a run."""
  changes = changes_since_training(workdir, config, step)
  if not changes:
    return
  kept = configs_lib.kept_record_path(workdir, step)
  if not kept.exists():
    write_text_whole(kept, configs_lib.record_path(workdir, step).read_text())
  fields = "field" if len(changes) == 1 else "fields"
  print(_listed(f"resuming at step {step} with changed config {fields} (the record of the "
                f"training up to step {step} is kept as {kept}; recorded -> now):", changes),
        flush=True)


def said_eval_changes(workdir: str, config: ConfigDict, step: int, *,
                      kept_in: str = "the results") -> list[str]:
  """The fields in which an evaluation's (or inference's) config differs from the one checkpoint
  `step` was trained with (another keyframe interval, eval.* settings), printed, but those its
  predictions do not read; the results (`kept_in`) record them, as an evaluation with `:k=6`
  would otherwise read as one of the trained k=2. A record that cannot be read is said, and
  compares nothing: the evaluation itself does not need it."""
  try:
    changes = changes_since_training(workdir, config, step,
                                     leave_out=_NOT_READ_BY_PREDICTIONS) or []
  except SetupError as error:
    print(f"note: {error}; this run's settings are not compared with the training's", flush=True)
    return []
  if changes:
    print(_listed("predicting with config fields that differ from the checkpoint's record "
                  f"{configs_lib.record_path(workdir, step)} (recorded -> now; kept in "
                  f"{kept_in}):", changes), flush=True)
  return changes
