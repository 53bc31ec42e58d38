"""DTERN on the synthetic video set, sized like configs/segformer/synthetic_mitb0.py (CPU demo).

  python -m vssjax.main --config=configs/dtern/synthetic_mitb0.py --workdir=workdirs/dtern_demo

Same backbone (MiT-B0 layout at half width), decoder width, optimizer, schedule, steps and seed as
the SegFormer demo, so the two are compared like for like (docs/results.md). Batch: 4 clips of 4
frames, i.e. the SegFormer demo's 16 frames per step through the backbone. K = 32 local exemplars
(the 96x96 crops give a 12x12 grid at 1/8, fewer pixels than the released K = 250).

Arguments: `quick` as in vspw_mitb0.py; `full_width` uses the real MiT-B0 widths.
"""

from vssjax import configs_lib

_BASE = configs_lib.load_sibling(__file__, "vspw_mitb0.py")


def get_config(arg=None):
  args = configs_lib.parse_arg(arg, quick=False, full_width=False)
  c = _BASE["vspw_base"]("b0")
  c.method.loss_average = "valid"  # as the SegFormer demo
  configs_lib.synthetic_demo(c, batch_size=4, half_width=not args.full_width)
  c.model.num_clusters = 32
  if args.quick:
    _BASE["quick_variant"](c)
  c.lock()
  return c
