"""DTERN with MiT-B1 on VSPW 480p: the B0 recipe (vspw_mitb0.py) with K and kernels of B1.

  python -m vssjax.main --config=configs/dtern/vspw_mitb1.py --workdir=workdirs/dtern_vspw_b1 \
      --config.data.vspw.root=/path/to/VSPW_480p --config.init.torch_checkpoint=/path/to/weights

Arguments: `quick` as in vspw_mitb0.py.
"""

import importlib.util
import pathlib


def _base():
  path = pathlib.Path(__file__).with_name("vspw_mitb0.py")
  spec = importlib.util.spec_from_file_location("dtern_vspw_mitb0", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg=None):
  return _base().dtern_vspw_config("b1", arg)
