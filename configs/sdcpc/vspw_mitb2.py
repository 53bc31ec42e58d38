r"""SD-CPC with MiT-B2 on VSPW 480p: the B0 recipe of vspw_mitb0.py (a reconstruction, see there).

  python -m vssjax.main --config=configs/sdcpc/vspw_mitb2.py --workdir=workdirs/sdcpc_vspw_b2 \
      --config.data.vspw.root=/path/to/VSPW_480p --config.init.torch_checkpoint=/path/to/mit_b2.pth

Arguments: `quick` as in vspw_mitb0.py.
"""

from vssjax import configs_lib

_BASE = configs_lib.load_sibling(__file__, "vspw_mitb0.py")


def get_config(arg=None):
  return _BASE["sdcpc_vspw_config"]("b2", arg)
