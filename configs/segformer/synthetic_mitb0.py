"""Per-frame SegFormer (MiT-B0 layout, half width) on the synthetic video set: the CPU demo.

  python -m vssjax.main --config=configs/segformer/synthetic_mitb0.py --workdir=workdirs/demo

Trains from scratch (no pretrained weights exist offline), evaluates on the disjoint validation
videos and writes results.{json,md} and an overlay video into the workdir. The README shows the
table it printed on a 2-core CPU, where this command takes 1.5-2 min (81-110 s, warm or cold
compilation cache; the README's first line adds the venv and install, about 4 min in all).

Arguments (`--config=...py:quick`): `quick` shrinks everything for smoke tests; `full_width` uses
the real MiT-B0 widths.
"""

from vssjax import configs_lib


def get_config(arg=None):
  args = configs_lib.parse_arg(arg, quick=False, full_width=False)
  c = configs_lib.base_config()
  c.method.name = "segformer"
  configs_lib.synthetic_demo(c, batch_size=16, half_width=not args.full_width)

  if args.quick:
    configs_lib.shrink_to_quick(c)
  c.lock()
  return c
