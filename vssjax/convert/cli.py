"""Converting released PyTorch weights into a workdir that `--mode=eval` evaluates directly.

The library side of `python -m vssjax.convert` (see `__main__.py`): builds the config's method and
its train state as the train loop does, swaps in the converted variables and saves the whole state
as the Orbax checkpoint of step 0, with the config recorded beside it as training records it (so
that evaluating with a config that does not fit names the differing fields). The initialisation
program is compiled only when the checkpoint lacks some variables (a backbone-only file): a full
one replaces every value (DTERN-B1: 25 s of XLA:CPU saved).
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import jax
from etils import epath

from vssjax import configs_lib, parallel
from vssjax.configs_lib import ConfigDict
from vssjax.errors import SetupError
from vssjax.methods import get_method
from vssjax.train import init_from
from vssjax.train.checkpoint import Checkpointer
from vssjax.train.loop import create_state


def convert_to_workdir(config: ConfigDict, checkpoint: str | Sequence[str], workdir: str, *,
                       fmt: str | None = None, allow_pickle: bool = False) -> epath.Path:
  """Converts `checkpoint` for `config` and saves it as step 0 in `workdir`; returns the step dir.

  Refuses a workdir that already holds checkpoints: the converted weights would either be ignored
  (resume picks the latest step) or overwrite a run. The workdir is made only once the checkpoint
  has been read and fits, so a failed conversion leaves nothing behind.
  """
  with contextlib.closing(Checkpointer(workdir, async_save=False, create=False)) as existing:
    if existing.latest_step() is not None:
      raise SetupError(
          f"{existing.directory} already holds checkpoints (latest step "
          f"{existing.latest_step()}); convert into an empty workdir")
  mesh = parallel.mesh_from_config(config)
  method = get_method(config)
  state, sharding, tx, _ = create_state(config, method, mesh, abstract=True)
  variables = init_from.load_torch_variables(checkpoint, method, fmt, allow_pickle=allow_pickle)
  if not init_from.replaces_every_variable(state, variables):  # the rest: freshly initialised
    state, sharding, tx, _ = create_state(config, method, mesh)
  state = init_from.state_with_variables(state, variables, tx, sharding)
  with contextlib.closing(Checkpointer(workdir, async_save=False)) as checkpointer:
    checkpointer.save(0, state, force=True)  # closing waits for the save
  if jax.process_index() == 0:
    configs_lib.write_record(config, workdir)
  print(f"saved the converted weights as step 0 in {checkpointer.directory}; evaluate with "
        f"--mode=eval --workdir={workdir}", flush=True)
  return checkpointer.directory / "0"
