r"""DTERN with MiT-B1 on VSPW 480p: the B0 recipe (vspw_mitb0.py) with K and kernels of B1.

  python -m vssjax.main --config=configs/dtern/vspw_mitb1.py --workdir=workdirs/dtern_vspw_b1 \
      --config.data.vspw.root=/path/to/VSPW_480p --config.init.torch_checkpoint=/path/to/weights

Arguments: `quick` as in vspw_mitb0.py.
"""

from vssjax import configs_lib

_BASE = configs_lib.load_sibling(__file__, "vspw_mitb0.py")


def get_config(arg=None):
  return _BASE["dtern_vspw_config"]("b1", arg)
