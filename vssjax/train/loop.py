"""The one train loop: every method trains here, through the `Method` interface.

Resume order: the latest checkpoint in `workdir/checkpoints` (state + data iterator), else the
PyTorch weights of `config.init.torch_checkpoint` (if set), else a fresh initialisation; a fresh
state also gets the method's `fixed_variables` (ETC's frozen teacher). Evaluates
at `train.eval_every` and at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils
from flax import traverse_util

from data_pipelines.clip_sampling import clip_length, make_clip_sampler
from data_pipelines.loader import eval_videos, flow_enabled, make_train_loader, sampler_epoch
from data_pipelines.transforms import check_size
from vssjax import configs_lib, parallel
from vssjax.configs_lib import ConfigDict
from vssjax.errors import SetupError
from vssjax.eval import report
from vssjax.eval.evaluator import check_tc_video_list, evaluate, make_scorers
from vssjax.methods import contract, get_method
from vssjax.methods.base import Method
from vssjax.progress import Progress
from vssjax.train import config_record, init_from
from vssjax.train import step as step_lib
from vssjax.train.checkpoint import Checkpointer, damaged_checkpoint_error, unreadable_file_error
from vssjax.train.log_lines import LogLines
from vssjax.train.metric_writer import MetricWriter, drop_lines_after_step
from vssjax.train.preemption import StopSignal
from vssjax.train.profiling import StepProfiler, check_profile_steps
from vssjax.train.optimizer import check_counts, lr_schedule, make_optimizer, optimizer_for
from vssjax.train.state import TrainState
from vssjax.train.workdir import (check_trained_workdir, check_workdir_to_evaluate,
                                 workdir_for_this_run, workdir_lock)


def batch_spec(config: ConfigDict) -> dict[str, jax.ShapeDtypeStruct]:
  """Global shapes of one training batch, from the config alone (no data is read). Also the
  shapes an evaluation restores a train state for: the crop size is checked here too."""
  batch = config.data.batch_size
  clip = clip_length(config.clip)
  height, width = check_size("data.train_transform.crop_size",
                             config.data.train_transform.crop_size)
  spec = {
      "frames": jax.ShapeDtypeStruct((batch, clip, height, width, 3), np.uint8),
      "labels": jax.ShapeDtypeStruct((batch, clip, height, width), np.int32),
      "labeled": jax.ShapeDtypeStruct((batch, clip), np.bool_),
  }
  if flow_enabled(config.data):
    spec["flow"] = jax.ShapeDtypeStruct((batch, clip - 1, height, width, 2), np.float32)
  return spec


def create_state(config: ConfigDict, method: Method, mesh: jax.sharding.Mesh, *,
                 abstract: bool = False):
  """Fresh train state (in its mesh sharding), its sharding, the optimizer and the schedule.

  With `abstract`, the state's shapes and shardings only: the target a checkpoint restores into
  (see `step.init_state`).
  """
  spec = batch_spec(config)

  def init_variables(rng):  # only the batch's shapes matter: no data is baked into the program
    return method.init(rng, {k: jax.numpy.zeros(s.shape, s.dtype) for k, s in spec.items()})

  rng = jax.random.PRNGKey(config.seed)
  try:
    variables = jax.eval_shape(init_variables, rng)
  except jax.errors.ConcretizationTypeError as error:  # JAX's words name no rule of the method's
    error.add_note(f"(in {type(method).__name__}.init, traced on shapes alone: it must depend on "
                   "the batch's shapes only, docs/extending.md)")
    raise
  contract.check_init_variables(method, variables)
  tx, schedule = make_optimizer(config.optim, config.train.steps, variables["params"])
  state, sharding = step_lib.init_state(init_variables, variables, tx, rng, mesh,
                                        config.sharding_rules, abstract=abstract)
  return state, sharding, tx, schedule


# How long a process waits for the others to compile the training step: a large model's takes
# minutes on a GPU (DTERN-B1's 200 s on an H200), more on a loaded host.
COMPILE_BARRIER_S = 3600


def _compile_on_every_process(train_step, args: tuple, start: int) -> None:
  """Compiles the training step for `args`, then waits at a barrier of the coordination service
  until every process has: the first step's collectives (Gloo's on CPUs) give up after 30 s on a
  process still compiling (a compilation cache that differs, a loaded host) with a raw
  DEADLINE_EXCEEDED. The step's call on `args` reuses this compilation."""
  train_step.lower(*args).compile()
  # Not `sync_global_processes`: by default it meets through a collective, Gloo's on CPUs again.
  ocp.multihost.get_barrier_sync_fn()(key=f"vssjax_training_step_compiled_from_step_{start}",
                                      timeout_ms=COMPILE_BARRIER_S * 1000)


def configured_train_step(config: ConfigDict, method: Method, params, state_sharding,
                          mesh: jax.sharding.Mesh):
  """The training loop's jitted step for `config` (`step.make_train_step`, the config's optimizer
  on `params`' tree, dropout keys from `config.seed`): what the loop runs, the bench times and
  `vssjax.aot` compiles for other devices."""
  return step_lib.make_train_step(method, optimizer_for(config.optim, params), state_sharding,
                                  mesh, jax.random.PRNGKey(config.seed + 1))


def restore_checkpoint(checkpointer: Checkpointer, abstract_state, config: ConfigDict,
                       workdir: str, data_iter=None, step: int | None = None, *,
                       variables_only: bool = False):
  """Checkpoint `step` (default: the latest) of `workdir`, restored into `abstract_state` (and
  `data_iter` in place); with `variables_only`, its model variables alone
  (`Checkpointer.restore`), and only they must fit.

  The ways a workdir does not fit the run are `SetupError`s that say what to do: a checkpoint
  without the data iterator (`vssjax.convert` writes one) cannot resume training, Grain restores an
  iterator only with the process and worker counts it was saved with, and a checkpoint whose
  arrays differ in shape or presence was written with another config (Orbax's own error is a
  ~200-line tree diff that names no config field). Any other restore error is raised as it is.
  """
  step = checkpointer.latest_step() if step is None else step
  # Checked on the saved metadata before restoring: a failed Orbax restore logs thousands of lines
  # (each array's TensorStore spec) around any error raised after it. First: a folder emptied by
  # hand would otherwise read as converted weights (it has no data iterator either).
  try:
    mismatched = checkpointer.mismatched_arrays(abstract_state, step,
                                                variables_only=variables_only)
  except (OSError, ValueError) as error:  # a missing file; an unreadable one (JSON, TensorStore)
    raise damaged_checkpoint_error(checkpointer, step, error) from error
  if data_iter is not None and not checkpointer.holds_data_iter(step):
    raise SetupError(
        f"{checkpointer.directory} holds converted weights (step {step}: the model's variables "
        "without the data-iterator state that training resumes from): use this workdir with "
        "--mode=eval or --mode=infer. To fine-tune from the weights, train in a new --workdir with "
        f"--config.init.workdir={workdir} --config.init.config=<the config file it was converted "
        "with> (or init.torch_checkpoint=<the PyTorch checkpoint you converted>; "
        "docs/reproducing.md)")
  earlier_state = None
  if data_iter is not None:
    _check_process_count(checkpointer, step)
    _check_resumed_settings(workdir, config, step)
    try:
      saved_iterator = checkpointer.saved_data_iter_state(step)
    except (OSError, ValueError) as error:  # missing; cut short (JSON)
      raise damaged_checkpoint_error(checkpointer, step, error) from error
    earlier_state = _checked_iterator_state(checkpointer, step, saved_iterator, data_iter)
  if mismatched:
    raise SetupError(
        f"the checkpoint in {checkpointer.directory} (step {step}) was written with a different "
        f"config: {len(mismatched)} arrays of its train state differ in shape or presence (e.g. "
        f"{mismatched[0]}).\n{config_record.mismatch_explanation(workdir, config, step)}\n"
        "Rerun with the config this workdir was trained (or converted) with, or use a new "
        "--workdir for this one.")
  try:
    if earlier_state is not None:  # restored here: Grain refuses it
      restored = checkpointer.restore(abstract_state, None, step)
      data_iter.set_state(earlier_state)
      return restored
    return checkpointer.restore(abstract_state, data_iter, step, variables_only=variables_only)
  except Exception as error:  # pylint: disable=broad-except  (Orbax wraps an array's read error)
    unreadable = unreadable_file_error(error)  # an array's or the data iterator's file, damaged
    if unreadable is None:
      raise
    raise damaged_checkpoint_error(checkpointer, step, unreadable) from error


def _check_process_count(checkpointer: Checkpointer, step: int) -> None:
  """Grain restores each process's iterator state only in a run of as many processes (a bare
  "File ... does not exist." ValueError otherwise), though the batches do not depend on the count
  (`make_train_loader`); the train state alone restores with any."""
  saved = checkpointer.data_iter_process_counts(step)
  if saved and jax.process_count() not in saved:
    counts = " or ".join(map(str, sorted(saved)))
    raise SetupError(
        f"the data iterator of step {step} in {checkpointer.directory / str(step)} was saved by "
        f"{counts} processes, and this run has {jax.process_count()}: resume training with "
        f"{counts} processes (Grain restores each process's position only so). The train state "
        "alone restores with any count: --mode=eval and --mode=infer read this workdir as it is, "
        "and a training run in a new workdir starts from its variables with "
        "--config.init.workdir=<this workdir> --config.init.config=<its config file> (at step "
        "0: its schedule and data order afresh)")


def _check_resumed_settings(workdir: str, config: ConfigDict, step: int) -> None:
  """The settings that the saved iterator position and optimizer state (of checkpoint `step`)
  are in the units of.

  Grain's iterator state holds per-worker positions and refuses another `data.num_workers` (a
  bare ValueError); the batches themselves do not depend on it (`make_train_loader`). It counts
  batches, which `make_train_loader` maps to samples k * `data.batch_size`: another batch size
  would resume at another sample, repeating or skipping part of the epoch without a word. So would
  another `seed`: an epoch's order of the videos is a permutation drawn from it. The optimizer
  counts its updates of `optim.accumulate_steps` steps each (`optimizer.make_optimizer`): between
  two counts above 1 its state has the same arrays and would restore, the schedule then read at
  other steps and a half-accumulated update finished with another count.
  """
  record_fields = configs_lib.read_record(workdir, step) or {}
  saved = record_fields.get("data", {})
  where = f"the data iterator of {workdir} was checkpointed with"
  record = configs_lib.record_path(workdir, step)
  seed = record_fields.get("seed")
  if seed is not None and seed != config.seed:
    raise SetupError(
        f"{where} seed={seed} ({record}): the order of each epoch's videos is drawn from it, so "
        f"seed={config.seed} would repeat some of this epoch's videos and skip others. Rerun with "
        f"--config.seed={seed}, or train in a new --workdir")
  workers = saved.get("num_workers")
  if workers is not None and workers != config.data.num_workers:
    raise SetupError(
        f"{where} data.num_workers={workers} ({record}), and Grain resumes it only with that "
        f"count: rerun with --config.data.num_workers={workers} (the batches are the same with "
        "any count)")
  batch_size = saved.get("batch_size")
  if batch_size is not None and batch_size != config.data.batch_size:
    raise SetupError(
        f"{where} data.batch_size={batch_size} ({record}): its position counts batches of that "
        f"size, so a batch size of {config.data.batch_size} would resume at another sample, "
        f"repeating or skipping data. Rerun with --config.data.batch_size={batch_size}, or train "
        "in a new --workdir (where --config.optim.accumulate_steps=k makes each update k batches, "
        "if a larger batch per update is the aim)")
  accumulate = record_fields.get("optim", {}).get("accumulate_steps")
  if accumulate is not None and accumulate != config.optim.accumulate_steps:
    raise SetupError(
        f"the optimizer state of {workdir} was checkpointed with optim.accumulate_steps="
        f"{accumulate} ({record}): it counts updates of {accumulate} steps, so "
        f"{config.optim.accumulate_steps} would read the learning-rate schedule at other steps. "
        f"Rerun with --config.optim.accumulate_steps={accumulate}, or train in a new --workdir "
        f"(--config.init.workdir={workdir} --config.init.config=<its config file> starts from "
        "its variables)")


def _checked_iterator_state(checkpointer: Checkpointer, step: int, saved_state: dict[str, Any],
                            data_iter) -> bytes | None:
  """Checks that the saved iterator position (`saved_state`, Grain's JSON) is one in an epoch of
  the items this run's is over (`loader.epoch_description`, carried by the sampler's repr): over
  other items it would resume at other clips. Grain refuses that restore in a bare ValueError that
  names neither the workdir nor what changed; every process learns of a refusal (a process whose
  own data did not change would otherwise wait in Orbax's restore for one that stopped).

  Returns None, or for a state saved by a vssjax before the epoch's record (its sampler's repr
  the same but for the epoch), that state with this run's sampler: Grain would refuse it as it
  is, so the caller sets it, and its epoch cannot be checked (said in a line)."""
  saved, now = saved_state["sampler"], json.loads(data_iter.get_state())["sampler"]
  (saved_epoch, _), (now_epoch, without_epoch) = sampler_epoch(saved), sampler_epoch(now)
  earlier = saved_epoch is None and saved == without_epoch
  refused = [saved != now and not earlier]
  if jax.process_count() > 1:
    refused = [bool(flag) for flag in np.ravel(multihost_utils.process_allgather(
        np.array(refused)))]
  where = f"the data iterator of step {step} in {checkpointer.directory / str(step)}"
  if refused[jax.process_index()]:
    raise SetupError(
        f"{where} was saved over a training epoch of "
        f"{saved_epoch or 'items it did not record'}, and this run's epoch is "
        f"{now_epoch}: its position would resume at other clips, repeating some and skipping "
        "others. data.train_epoch, data.train_split or the split's videos (their names, lengths or "
        "labelled frames) differ from the training's (a moved data.data_dir over the same videos "
        "resumes). Resume with the data it was trained on, or train in a new --workdir "
        "(--config.init.workdir=<this workdir> --config.init.config=<its config file> starts "
        "from its variables)")
  if any(refused):
    raise SetupError(f"{where}: the training epoch of process(es) "
                     f"{[i for i, flag in enumerate(refused) if flag]} differs from the one it was "
                     "saved over (their errors say how); this process's is the same")
  if not earlier:
    return None
  print(f"{where} was saved by a vssjax that did not record its training epoch (before "
        "2026-12-08): resumed without checking that the training data is the same", flush=True)
  return json.dumps({**saved_state, "sampler": now}).encode()


def _log_startup(config: ConfigDict, mesh, state: TrainState, local_batch: int) -> None:
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  print(f"process {jax.process_index()}/{jax.process_count()}: {jax.local_device_count()} local / "
        f"{jax.device_count()} global devices ({jax.default_backend()}), mesh {dict(mesh.shape)}, "
        f"global batch {config.data.batch_size} (local {local_batch}), "
        f"{num_params / 1e6:.3f}M parameters", flush=True)
  # Named, as a `:quick` suffix or a config's later lines may swap the source a user set.
  print(f"data: {config.data.source} (training on {config.data.train_split}, evaluating on "
        f"{config.data.eval_split})", flush=True)


def _check_sharding_rules(rules, mesh: jax.sharding.Mesh) -> None:
  """The rules' form, now rather than once the data is indexed; and a note where they split
  arrays over an fsdp axis of one device, which replicates every array without a word."""
  checked = parallel.checked_sharding_rules(rules)
  if (mesh.shape[parallel.FSDP_AXIS] == 1 and any(kind == "fsdp" for _, kind in checked)
      and jax.process_index() == 0):
    print("note: sharding_rules split arrays over the fsdp axis, and mesh.fsdp=1: every array is "
          "whole on each device (--config.mesh.fsdp=N splits them over N)", flush=True)


def check_train_settings(train: ConfigDict, optim: ConfigDict) -> None:
  """The loop's and the optimizer's counts, checked before anything runs: an interval of 0 would
  divide by zero at the first step, a negative `eval_every` would evaluate after every step, and
  `keep_checkpoints=0` (Orbax's max_to_keep) would delete every checkpoint as it is written,
  leaving nothing to resume or evaluate. With `optim.accumulate_steps` k, a step is a micro-batch
  and an update takes k: the steps past the last whole update would be computed and dropped (all
  of them, fewer than k)."""
  check_counts(optim)  # first: k is at least 1 below
  if train.steps < 1:
    raise SetupError(f"train.steps={train.steps}: training needs at least one step")
  if train.steps % optim.accumulate_steps:
    raise SetupError(f"train.steps={train.steps} is not a multiple of optim.accumulate_steps="
                     f"{optim.accumulate_steps}: an update takes {optim.accumulate_steps} steps "
                     f"(micro-batches), and the last {train.steps % optim.accumulate_steps} would "
                     "update nothing")
  for name in ("log_every", "checkpoint_every", "keep_checkpoints"):
    if train[name] < 1:
      raise SetupError(f"train.{name}={train[name]}: must be at least 1")
  if train.eval_every < 0:
    raise SetupError(f"train.eval_every={train.eval_every}: must be 0 (evaluate only at the "
                     "end) or a number of steps")
  check_profile_steps(tuple(train.profile_steps))


def train_and_evaluate(config: ConfigDict, workdir: str, *,
                       max_steps_this_run: int | None = None) -> dict[str, Any] | None:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint), then evaluates.

  `max_steps_this_run` stops early after that many updates (a time-boxed job, or a test of
  interruption), and so does SIGTERM (after checkpointing); the final evaluation then does not run.
  Returns the final results, if any.
  """
  check_train_settings(config.train, config.optim)
  mesh = parallel.mesh_from_config(config)
  _check_sharding_rules(config.sharding_rules, mesh)
  local_batch = parallel.check_batch_size(config.data.batch_size, mesh)
  method = get_method(config)
  scorers = make_scorers(config)  # the evaluation's settings, checked now, not after training
  sampler = make_clip_sampler(config.clip)
  loader = make_train_loader(config.data, sampler, seed=config.seed)
  # The evaluation's split too (its videos listed, their clips checked), rather than at the first
  # evaluation: a missing split or root, an empty video folder, a TC list naming other videos.
  next(eval_videos(config.data, config.data.eval_split, max_videos=1,
                   clip_frames=sampler.eval_frames_per_clip), None)
  check_tc_video_list(config, scorers)
  data_iter = iter(loader)
  total = config.train.steps
  # Made once the setup has been checked. The lock is held through the final evaluation: a second
  # run in this workdir (a requeued job) would otherwise find the training complete and evaluate
  # alongside, both writing the results.
  with workdir_for_this_run(workdir), workdir_lock(workdir):
    # Closed however the run ends (an error included): an asynchronous save in flight completes.
    with contextlib.closing(Checkpointer(workdir, keep=config.train.keep_checkpoints,
                                         async_save=config.train.async_checkpoint)) as checkpointer:
      for folder in checkpointer.remove_unfinished():
        print(f"removed {folder}: a save that a stopped run left unfinished", flush=True)
      resumed = checkpointer.latest_step() is not None
      state, state_sharding, schedule = _initial_state(
          config, method, mesh, checkpointer, workdir, data_iter, resumed=resumed,
          local_batch=local_batch)
      start = int(state.step)
      _reset_records(config, workdir, start, resumed=resumed)
      end = total if max_steps_this_run is None else min(total, start + max_steps_this_run)
      state, done, stopped = _run_steps(
          config, method, mesh, state, state_sharding, schedule, checkpointer, workdir, data_iter,
          range(start, end))
    # Not after a stop at the last step: a preempted job ends now, and its re-run evaluates.
    if done >= total and not stopped:  # one that trained nothing may evaluate otherwise
      return evaluate(method, state.variables, config, workdir=workdir, step=done,
                      config_changes=(config_record.said_eval_changes(workdir, config, done)
                                      if start >= total else ()))
  return None


def _initial_state(config: ConfigDict, method: Method, mesh: jax.sharding.Mesh,
                   checkpointer: Checkpointer, workdir: str, data_iter, *, resumed: bool,
                   local_batch: int):
  """The state this run starts from, its sharding and the learning-rate schedule: the latest
  checkpoint's (`data_iter` restored with it) when `resumed`, else a fresh state with the method's
  `fixed_variables`, and `init.torch_checkpoint`'s weights or `init.workdir`'s, swapped in."""
  # Read before the initialisation compiles (minutes for a large model): a wrong file, or ETC's
  # missing teacher, is said at once. A resumed run reads none of them.
  fixed = method.fixed_variables() if not resumed else {}
  trained = _variables_of_run(config.init) if not resumed else None
  weights = (init_from.load_torch_variables(
      config.init.torch_checkpoint, method, allow_pickle=config.init.allow_pickle,
      setting="init.torch_checkpoint") if config.init.torch_checkpoint and not resumed else None)
  state, state_sharding, tx, schedule = create_state(config, method, mesh, abstract=resumed)
  _log_startup(config, mesh, state, local_batch)
  if resumed:
    state = restore_checkpoint(checkpointer, state, config, workdir, data_iter)
    print(f"resumed from {checkpointer.directory} at step {int(state.step)}", flush=True)
  else:
    loaded = init_from.combined(fixed, weights or {}, trained or {})
    if loaded:
      try:
        state = init_from.state_with_variables(
            state, loaded, tx, state_sharding, report_kept=bool(weights or trained))
      except SetupError as error:  # its "converted" variables may be the method's own
        if fixed:
          error.add_note(f"(swapped in: {type(method).__name__}.fixed_variables()'s "
                         f"{sorted(fixed)}{' and init.torch_checkpoint' if weights else ''})")
        if trained:
          error.add_note(f"(swapped in: the variables of init.workdir={config.init.workdir!r} "
                         f"that init.take={config.init.take!r} matches; a narrower init.take "
                         "leaves out what differs, e.g. '^(params|batch_stats)/backbone/')")
        raise
  return state, state_sharding, schedule


def _variables_of_run(init: ConfigDict) -> dict[str, Any] | None:
  """The variables of another vssjax run's latest checkpoint (`init.workdir`, restored with
  `init.config`, the config it was trained with) whose '/'-joined paths `init.take` matches, as
  host arrays; None where `init.workdir` is unset. Fine-tuning a trained model on other data, or
  taking its backbone into another method's model."""
  if not init.workdir:
    if init.config:
      raise SetupError(f"init.config={init.config!r} is set without init.workdir, the run "
                       "trained with it to start from")
    return None
  if init.torch_checkpoint:
    raise SetupError("init.workdir and init.torch_checkpoint are both set: start from one")
  if not init.config:
    raise SetupError(f"init.workdir={init.workdir!r} needs init.config, the config file that run "
                     "was trained with (its checkpoint is restored by it)")
  try:
    take = re.compile(init.take)
  except re.error as error:
    raise SetupError(f"init.take={init.take!r} is not a regular expression: {error}") from error
  workdir = os.path.expanduser(init.workdir)
  try:
    source = config_record.as_recorded_in(
        workdir, configs_lib.load_config_file(os.path.expanduser(init.config)), "init.config")
    _, variables, step = restore_for_eval(source, workdir)
  except SetupError as error:
    error.add_note(f"(the run to start from: init.workdir={init.workdir!r}, "
                   f"init.config={init.config!r})")
    raise
  whole = parallel.local_copies(variables, jax.local_devices()[:1])[0]
  arrays = traverse_util.flatten_dict(jax.device_get(whole), sep="/")
  taken = {path: array for path, array in arrays.items() if take.search(path)}
  if not taken:
    raise SetupError(f"init.take={init.take!r} matches none of the variables of step {step} of "
                     f"{init.workdir}, whose '/'-joined paths are as {sorted(arrays)[0]!r}")
  print(f"init: {len(taken)} of the {len(arrays)} arrays of step {step} of {init.workdir} "
        f"(init.take={init.take!r})", flush=True)
  return traverse_util.unflatten_dict(taken, sep="/")


def _reset_records(config: ConfigDict, workdir: str, start: int, *, resumed: bool) -> None:
  """Process 0 makes the workdir's records those of a run from step `start`: a run drops the
  logged steps it trains again (all of them in a fresh start after a run killed before its first
  checkpoint), and says so, and one that trains records its config. Called only once the state is
  restored: a failed restore keeps the record of what was trained. A resume from an evaluation
  step's checkpoint whose evaluation is not in the history (a run killed during it, as its step is
  saved first; one stopped at that step; an `eval_every` changed since) says how to make it."""
  if jax.process_index() != 0:
    return
  for log in ("metrics.jsonl", report.HISTORY):  # the steps this run trains again
    dropped = drop_lines_after_step(epath.Path(workdir) / log, start)
    if dropped:
      print(f"{log}: {dropped} line{'s' if dropped > 1 else ''} logged after step {start} "
            f"dropped: this run starts from step {start}", flush=True)
  # Rewritten only by a run that trains: one whose train.steps are at or below the checkpoint's
  # only evaluates it, and config.json keeps what it was trained with.
  if start < config.train.steps:
    if resumed:
      config_record.keep_record_of_changed_config(workdir, config, start)
      _say_longer_schedule(config, workdir, start)  # from the record kept just before
      _say_missing_evaluation(config, workdir, start)
    configs_lib.write_record(config, workdir)


def _say_longer_schedule(config: ConfigDict, workdir: str, start: int) -> None:
  """A resume with another `train.steps` (listed among the changed fields) reads the learning-rate
  schedule over the new length from its next step on: the rate there, against the recorded
  length's (with this run's other `optim` settings), as a poly schedule jumps with it."""
  recorded = (configs_lib.read_record(workdir, start) or {}).get("train", {}).get("steps")
  total = config.train.steps
  if recorded is None or recorded == total:
    return
  now, then = (float(lr_schedule(config.optim, steps, config.optim.lr)(start))
               for steps in (total, recorded))
  print(f"train.steps {recorded} -> {total}: the learning-rate schedule runs over {total} steps "
        f"now, step {start + 1} at lr {now:.4g} (at {then:.4g} over {recorded})", flush=True)


def _say_missing_evaluation(config: ConfigDict, workdir: str, start: int) -> None:
  """A resume from an evaluation step that the history (`report.HISTORY`) has no evaluation of:
  the command that makes it."""
  every = config.train.eval_every
  if not every or start % every:
    return
  path = epath.Path(workdir) / report.HISTORY
  lines = path.read_text().splitlines() if path.exists() else []
  if start not in {json.loads(line)["step"] for line in lines}:
    print(f"step {start} is an evaluation step (train.eval_every={every}) that {report.HISTORY} "
          f"has no evaluation of: --mode=eval --step={start} makes it while the workdir keeps its "
          f"checkpoint (the last train.keep_checkpoints={config.train.keep_checkpoints})",
          flush=True)


def _run_steps(config: ConfigDict, method: Method, mesh: jax.sharding.Mesh, state: TrainState,
               state_sharding, schedule, checkpointer: Checkpointer, workdir: str, data_iter,
               steps: range) -> tuple[TrainState, int, bool]:
  """Trains the updates `steps` (0-based: the first is logged as step `steps.start + 1`), logging,
  checkpointing, profiling and evaluating at the config's intervals, until a stop request.

  Returns the state, the number of updates done, and whether a stop request ended the run early
  (its step checkpointed). A run that trained all its steps returns once its last save has
  completed, a stop request meanwhile counting as one that ended it. With data workers the last
  batch's host arrays are Grain shared memory (aliased by the device arrays on a CPU), unlinked in
  the background once released: released as this returns, before the evaluation, rather than at
  exit, where Python warns of "leaked shared_memory objects".
  """
  start, end, total = steps.start, steps.stop, config.train.steps
  train_step = configured_train_step(config, method, state.params, state_sharding, mesh)
  schedule_length = step_lib.schedule_length(total, mesh)
  with contextlib.ExitStack() as closing:
    writer = closing.enter_context(contextlib.closing(
        MetricWriter(workdir, starts_after_step=start)))
    progress = Progress("train step", total, "steps", min_interval_s=0.0)
    profiler = StepProfiler(workdir, tuple(config.train.profile_steps), start, end)
    closing.callback(profiler.close)  # a trace that a stop or an error cut short
    lines = LogLines(writer, progress, schedule, config)
    if start >= total:
      print(f"training already complete (checkpoint at step {start}, train.steps={total}); "
            f"evaluating it", flush=True)
    else:  # the first step waits for XLA to compile it: minutes for a large model
      print(f"train: compiling the training step, then steps {start + 1}..{end}", flush=True)
    done = start
    with StopSignal() as stop_signal:
      for step in steps:
        with profiler.step(step + 1):
          waiting_from = time.perf_counter()
          batch = parallel.to_global(next(data_iter), mesh)
          waited = time.perf_counter() - waiting_from
          if step == start and jax.process_count() > 1:
            _compile_on_every_process(train_step, (state, batch, schedule_length), start)
          state, metrics = train_step(state, batch, schedule_length)
        done = step + 1
        profiler.after_step(
            done, (state, metrics),
            compiled=lambda: train_step.lower(state, batch, schedule_length).compile())
        lines.step(done, metrics, waited)
        stopping = stop_signal.should_stop(done)
        if done % config.train.log_every == 0 or done == end or stopping:
          lines.write(done)
        evaluating = (bool(config.train.eval_every) and done % config.train.eval_every == 0
                      and done != total and not stopping)
        # An evaluation takes minutes, longer than a scheduler's grace between SIGTERM and
        # SIGKILL: its step is checkpointed first, so a preemption during it loses no step.
        saving = (done % config.train.checkpoint_every == 0 or done == end or stopping
                  or evaluating)
        if saving or evaluating:  # the steps since the last log line, checked
          lines.check_pending()
        if saving:
          saving_from = time.perf_counter()
          checkpointer.save(done, state, data_iter)
          lines.saved(time.perf_counter() - saving_from)
        if evaluating:
          results = None
          if not stop_signal.requested_here():  # not one asked during the save
            evaluating_from = time.perf_counter()
            # One process alone may cut it short; several finish it (every one reaches the merge).
            cut_short_if = None if jax.process_count() > 1 else stop_signal.requested_here
            results = evaluate(method, state.variables, config, workdir=workdir,
                               step=done, stop_requested=cut_short_if)
            lines.paused(time.perf_counter() - evaluating_from)
          if results is None:
            print(f"step {done}'s evaluation was cut short: --mode=eval --step={done} "
                  "evaluates it", flush=True)
        # A request during this step's save or evaluation (one process) stops here, not a step
        # on; one after an unsaved step's check is for the next step's check, which saves.
        if stopping or (saving and stop_signal.requested_here()):
          break
      else:
        # The last step's save completes still under the stop signal: a Ctrl-C (or SIGTERM)
        # meanwhile lets it complete, where Python's handler aborted it (Orbax's tracebacks, the
        # steps since the save before lost), and stops the run there, without the evaluation.
        checkpointer.wait_until_saved()
        if not stop_signal.requested_here():
          return state, done, False
      lines.write(done)  # the steps since the last line, if any
      print(f"stopped at step {done} on request; checkpoint saved, re-run to resume", flush=True)
      return state, done, True


def restore_for_eval(config: ConfigDict, workdir: str, step: int | None = None):
  """The method and the variables of checkpoint `step` (default: the latest) in `workdir`, and
  that step. A `SetupError` when there is none, naming the steps there are; a workdir that does not
  exist is not created."""
  check_trained_workdir(workdir)
  with contextlib.closing(Checkpointer(workdir, async_save=False, create=False)) as checkpointer:
    # Every process, before any of them refuses: each lists the folder itself, and one whose
    # listing lags (training writing this workdir) would restore another step's shards.
    latest = checkpointer.latest_step()
    steps = checkpointer.all_steps()
    if latest is None:
      unfinished = checkpointer.unfinished_steps()
      if unfinished:  # a first save killed, or in progress: not "train first"
        raise SetupError(
            f"no complete checkpoint in {checkpointer.directory}: the save of step "
            f"{unfinished[-1]} is still being written, or its run was killed before it completed; "
            "wait for it, or resume training (--mode=train)")
      raise SetupError(
          f"no checkpoint in {checkpointer.directory}; train first (--mode=train) or convert "
          "PyTorch weights into it (python -m vssjax.convert)")
    if step is None:
      step = latest
    elif step not in steps:
      raise SetupError(f"no checkpoint of step {step} in {checkpointer.directory}; it holds "
                       f"step{'s' if len(steps) > 1 else ''} {', '.join(map(str, steps))} "
                       "(training keeps the last train.keep_checkpoints)")
    mesh = parallel.mesh_from_config(config)
    method = get_method(config)
    state, _, _, _ = create_state(config, method, mesh, abstract=True)
    restored = restore_checkpoint(checkpointer, state, config, workdir, step=step,
                                  variables_only=True)
  return method, {"params": restored["params"], **restored["model_state"]}, step


def evaluate_checkpoint(config: ConfigDict, workdir: str, step: int | None = None
                        ) -> dict[str, Any]:
  """Evaluates checkpoint `step` (default: the latest) of `workdir`, writing its results there."""
  check_workdir_to_evaluate(workdir, "the evaluation's results", every_process_writes=False)
  check_tc_video_list(config, make_scorers(config))  # `eval.*` too: before the restore's minutes
  method, variables, step = restore_for_eval(config, workdir, step)
  print(f"evaluating checkpoint of step {step} from {workdir}", flush=True)
  return evaluate(method, variables, config, workdir=workdir, step=step,
                  config_changes=config_record.said_eval_changes(workdir, config, step))

