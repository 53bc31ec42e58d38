r"""Per-frame SegFormer (MiT-B0 layout, half width) on vtest-pseudo: real footage, project labels.

  python -m data_pipelines.make_vtest_pseudo --video=.../vtest.avi \
      --out_dir=~/vssjax_data/vtest_pseudo
  python -m data_pipelines.build --source=vtest_pseudo --manual_dir=~/vssjax_data/vtest_pseudo
  python -m vssjax.main --config=configs/segformer/vtest_pseudo_mitb0.py --workdir=workdirs/vtest

vtest-pseudo is OpenCV's vtest.avi campus clip with labels made by this project (scene polygons and
background subtraction, see data_pipelines/sources/vtest_pseudo.py and docs/data.md): report its
numbers as "vtest-pseudo mIoU", never as a benchmark result. Trained from scratch.

Arguments (`--config=...py:quick`): `quick` swaps in tiny synthetic data and a tiny model, so the
config builds in tests without the dataset; `root=DIR` points at the built frames (default
~/vssjax_data/vtest_pseudo).
"""

from data_pipelines.sources import vtest_pseudo
from vssjax import configs_lib


def get_config(arg=None):
  args = configs_lib.parse_arg(arg, quick=False, root="~/vssjax_data/vtest_pseudo")
  c = configs_lib.base_config()
  c.method.name = "segformer"
  c.data.source = "vtest_pseudo"
  c.data.vtest_pseudo = configs_lib.ConfigDict(dict(root=args.root))
  c.data.num_classes = len(vtest_pseudo.CLASS_NAMES)
  c.data.train_transform.update(scale=(384, 288), crop_size=(256, 256))
  c.data.eval_transform.update(scale=(384, 288))
  c.model.backbone = "b0"
  c.model.backbone_overrides.embed_dims = (16, 32, 80, 128)
  c.model.decoder_dim = 128

  c.data.batch_size = 8
  c.optim.lr = 1e-3  # From scratch: far above the 6e-5 used to fine-tune ImageNet weights.
  c.optim.warmup_steps = 50
  c.train.steps = 1000
  c.train.log_every = 25
  c.train.checkpoint_every = 250

  if args.quick:
    configs_lib.shrink_to_quick(c)
  c.lock()
  return c
