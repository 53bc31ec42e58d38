"""SD-CPC on the synthetic video set, sized like configs/dtern/synthetic_mitb0.py (CPU demo).

  python -m vssjax.main --config=configs/sdcpc/synthetic_mitb0.py --workdir=workdirs/sdcpc_demo

Same backbone (MiT-B0 layout at half width), decoder width, optimizer, schedule, steps, seed and
batch (4 clips x 4 frames [t-9, t-6, t-3, t]) as the DTERN and SegFormer demos, so the three are
compared like for like (docs/results.md). The 96x96 crops give a 12x12 alignment grid, so the
DSSA coarse stage pools by 4 to 3x3 and keeps 5 of 9 cells per reference.

Arguments: `quick` as in vspw_mitb0.py; `full_width` uses the real MiT-B0 widths.
"""

from vssjax import configs_lib

_BASE = configs_lib.load_sibling(__file__, "vspw_mitb0.py")


def get_config(arg=None):
  args = configs_lib.parse_arg(arg, quick=False, full_width=False)
  c = _BASE["sdcpc_base"]("b0")
  c.method.loss_average = "valid"  # as the SegFormer demo
  configs_lib.synthetic_demo(c, batch_size=4, half_width=not args.full_width)
  if args.quick:
    _BASE["quick_variant"](c)
  c.lock()
  return c
