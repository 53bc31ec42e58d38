r"""SD-CPC with MiT-B5 on VSPW 480p: the B0 recipe of vspw_mitb0.py (a reconstruction, see there).
Carries the published mIoU 51.1 (journal abstract), the paper's headline number.

  python -m vssjax.main --config=configs/sdcpc/vspw_mitb5.py --workdir=workdirs/sdcpc_vspw_b5 \
      --config.data.vspw.root=/path/to/VSPW_480p --config.init.torch_checkpoint=/path/to/mit_b5.pth

Arguments: `quick` as in vspw_mitb0.py.
"""

from vssjax import configs_lib

_BASE = configs_lib.load_sibling(__file__, "vspw_mitb0.py")


def get_config(arg=None):
  return _BASE["sdcpc_vspw_config"]("b5", arg)
