"""DCFM on the synthetic video set, sized like configs/segformer/synthetic_mitb0.py (CPU demo).

  python -m vssjax.main --config=configs/dcfm/synthetic_mitb0.py --workdir=workdirs/dcfm_demo

Same backbone (MiT-B0 layout at half width), common-feature width (128), optimizer, schedule,
steps and seed as the SegFormer demo, so the two compare like for like (docs/results.md). Batch:
8 pairs [x_U, x_L], i.e. the SegFormer demo's 16 frames per step through the encoder. The
encoder (MiT + MLP decoder) trains at the demo's lr, FFM and classifier at 10x, as DCFM does.

Arguments: `quick` as in vspw_mitb2.py, `k=N` the keyframe interval (default 2), `mode=P` for
P mode.
"""

from vssjax import configs_lib

_BASE = configs_lib.load_sibling(__file__, "vspw_mitb2.py")


def get_config(arg=None):
  args = configs_lib.parse_arg(arg, quick=False, k=2, mode="B")
  c = _BASE["dcfm_base"]("b0")
  c.method.keyframe_interval = args.k
  c.method.mode = args.mode
  configs_lib.synthetic_demo(c, batch_size=8)
  c.optim.poly_after_warmup = False  # the SegFormer demo's schedule (like for like)
  if args.quick:
    _BASE["quick_variant"](c)
  c.lock()
  return c
