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
  if not args.full_width:
    c.model.backbone_overrides.embed_dims = (16, 32, 80, 128)
  c.model.decoder_dim = 128
  c.data.source = "synthetic"
  c.data.num_classes = 9
  c.data.batch_size = 4
  c.optim.lr = 1e-3  # from scratch, as the SegFormer demo
  c.optim.warmup_steps = 50
  c.train.steps = 600
  c.train.log_every = 25
  c.train.checkpoint_every = 200
  c.published.source = ""
  if args.quick:
    _BASE["quick_variant"](c)
  c.lock()
  return c
