"""Per-frame SegFormer (MiT-B0 layout, half width) on the synthetic video set: the 5-minute CPU demo.

  python -m vssjax.main --config=configs/segformer/synthetic_mitb0.py --workdir=workdirs/demo

Trains from scratch (no pretrained weights exist offline), evaluates on the disjoint validation videos
and writes results.{json,md} and an overlay video into the workdir. The README shows the table it
printed on a 2-core CPU.

Arguments (`--config=...py:quick`): `quick` shrinks everything for smoke tests; `full_width` uses the
real MiT-B0 widths.
"""

from vssjax import configs_lib


def get_config(arg=None):
  args = configs_lib.parse_arg(arg, quick=False, full_width=False)
  c = configs_lib.base_config()
  c.method.name = "segformer"
  c.data.num_classes = 9
  c.model.backbone = "b0"
  if not args.full_width:
    c.model.backbone_overrides.embed_dims = (16, 32, 80, 128)
  c.model.decoder_dim = 128

  c.data.batch_size = 16
  c.optim.lr = 1e-3  # from scratch: far above the 6e-5 used to fine-tune ImageNet weights
  c.optim.warmup_steps = 50
  c.train.steps = 600
  c.train.log_every = 25
  c.train.checkpoint_every = 200

  if args.quick:
    configs_lib.shrink_to_quick(c)
  c.lock()
  return c
