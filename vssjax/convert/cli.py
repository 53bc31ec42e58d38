"""Converting released PyTorch weights into a workdir that `--mode=eval` evaluates directly.

The library side of `python -m vssjax.convert` (see `__main__.py`): builds the config's method and
its train state as the train loop does, swaps in the converted variables and saves them, without
an optimizer state, as the Orbax checkpoint of step 0 (what `--mode=eval` restores: MiT-B5 converts
in 6.4-6.5 s instead of 11.0-11.3 s, 1.3 GB peak memory instead of 2.1), with the config recorded
beside it as training records it (so that evaluating with a config that does not fit names the
differing fields). The initialisation program is compiled only when the checkpoint lacks some
variables (e.g. ETC's distillation teacher, which evaluation does not use): a full one replaces
every value (DTERN-B1: 25 s of XLA:CPU saved). An ImageNet backbone file is refused: it would
leave the head untrained.
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
from vssjax.train.workdir import make_workdir


def convert_to_workdir(config: ConfigDict, checkpoint: str | Sequence[str], workdir: str, *,
                       fmt: str | None = None, allow_pickle: bool = False) -> epath.Path:
  """Converts `checkpoint` for `config` and saves it as step 0 in `workdir`; returns the step dir.

  The workdir is made only once the checkpoint has been read and fits, so a failed conversion
  leaves nothing behind.
  """
  _check_new_workdir(workdir)
  mesh = parallel.mesh_from_config(config)
  method = get_method(config)
  state, sharding, tx, _ = create_state(config, method, mesh, abstract=True)
  variables = init_from.load_torch_variables(checkpoint, method, fmt, allow_pickle=allow_pickle,
                                             whole_model=True)
  if not init_from.replaces_every_variable(state, variables):  # the rest: freshly initialised
    print("initialising the variables the checkpoint does not hold (e.g. ETC's teacher): "
          "compiling the initialisation", flush=True)
    state, sharding, tx, _ = create_state(config, method, mesh)
  # The variables alone: evaluation, inference and `init.workdir` read nothing else, and a
  # training run refuses this workdir (no data iterator to resume from).
  state = init_from.state_with_variables(state, variables, None, sharding)
  make_workdir(workdir)
  with contextlib.closing(Checkpointer(workdir, async_save=False)) as checkpointer:
    checkpointer.save(0, state, force=True)  # closing waits for the save
  if jax.process_index() == 0:
    configs_lib.write_record(config, workdir)
  print(f"saved the converted weights as step 0 in {checkpointer.directory}", flush=True)
  return checkpointer.directory / "0"


def _check_new_workdir(workdir: str) -> None:
  """Refuses a workdir that holds anything: a training run's (even before its first checkpoint)
  would get its record overwritten and the converted weights mixed into its steps; an earlier
  conversion's would be shadowed or overwritten."""
  path = epath.Path(workdir)
  if path.exists() and not path.is_dir():
    raise SetupError(f"--workdir={workdir} is a file: convert into a new or empty directory")
  entries = sorted(p.name for p in path.iterdir()) if path.exists() else []
  if entries:
    raise SetupError(f"--workdir={workdir} is not empty (it holds {', '.join(entries[:5])}"
                     f"{', ...' if len(entries) > 5 else ''}): convert into a new or empty "
                     "directory")
