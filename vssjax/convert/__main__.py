r"""Command line: PyTorch checkpoint -> Orbax checkpoint (step 0) for a config.

  python -m vssjax.convert --config=configs/segformer/vspw_mitb0.py --checkpoint=PATH \
      --workdir=DIR [--format=hf|mmseg|dcfm|pspnet|resnet] [--allow_pickle]

then `python -m vssjax.main --config=<same> --workdir=DIR --mode=eval`. DCFM releases its weights
as two files: pass both, `--checkpoint=encoder.pth,decoder.pth`. PATH may be a .pth/.pt/.bin
pickle (mmseg/mmcv releases, needs torch), a .safetensors file or a `save_pretrained` directory.
The format is detected from the keys when --format is omitted. To fine-tune from the weights
instead, train with `--config.init.torch_checkpoint=PATH` in a fresh workdir.
"""
from __future__ import annotations

import shlex
import sys

from absl import app, flags
from ml_collections import config_flags

from vssjax.command_line import (config_arguments, parse_config_flags, path_flag,
                                 quiet_routine_logs, refuse_arguments, user_errors_in_one_line)

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file whose model the weights are for.", lock_config=True)
_CHECKPOINT = flags.DEFINE_list(
    "checkpoint", None, "PyTorch checkpoint file or HF directory; several comma-separated files "
    "are the parts of one checkpoint (DCFM: encoder,decoder).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Empty directory to write the checkpoint into.")
_FORMAT = flags.DEFINE_enum("format", None, ["hf", "mmseg", "dcfm", "pspnet", "resnet"],
                            "Checkpoint naming scheme; detected from the keys when omitted.")
_ALLOW_PICKLE = flags.DEFINE_bool(
    "allow_pickle", False, "Fully unpickle .pth files (executes code in the file: trusted files "
    "only). Needed for some mmcv checkpoints whose metadata holds arbitrary objects.")
flags.mark_flags_as_required(["config", "checkpoint", "workdir"])


@user_errors_in_one_line
def main(argv):
  refuse_arguments(argv)
  quiet_routine_logs()
  from vssjax.convert import cli  # pylint: disable=g-import-not-at-top  (fast --help)

  checkpoint = [path_flag("checkpoint", path, "a checkpoint file or folder")
                for path in _CHECKPOINT.value or [""]]
  workdir = path_flag("workdir", _WORKDIR.value)
  cli.convert_to_workdir(_CONFIG.value, checkpoint, workdir, fmt=_FORMAT.value,
                         allow_pickle=_ALLOW_PICKLE.value)
  # The same config and overrides: a converted workdir evaluates only with the config it records.
  print("evaluate with (and the data's --config.data paths): python -m vssjax.main "
        + " ".join(config_arguments(sys.argv)) + f" --workdir={shlex.quote(workdir)} --mode=eval",
        flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_config_flags)
