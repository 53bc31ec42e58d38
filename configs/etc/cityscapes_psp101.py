r"""PSPNet-101 (semseg, deep base) on Cityscapes: ETC's distillation teacher (specs/etc.md §3).

  python -m vssjax.convert --config=configs/etc/cityscapes_psp101.py \
      --checkpoint=pspnet101_cityscapes.pth --workdir=T
  python -m vssjax.main --config=configs/etc/cityscapes_psp101.py --workdir=T --mode=eval \
      --config.data.cityscapes.root=/data/cityscapes

ETC's teacher is not released; the paper's is [UNVERIFIED] a PSPNet-101, probably the authors'
Structured-KD Cityscapes teacher. semseg's PSPNet-101 checkpoints (keys `layer0.`, `ppm.`,
`cls.`, `aux.`) convert as format 'pspnet'. Training here follows semseg's Cityscapes recipe as
far as ETC's builders express it: 713x713 crops, unweighted CE + 0.4 aux, SGD 0.01 (heads x10),
poly 0.9, batch 16 (8 GPUs x 2), 200 epochs (37,200 steps: semseg's DistributedSampler pads the
2,975 frames to 8 x 372, 186 iterations per epoch). A distilling student reads it with
`method.teacher.config=configs/etc/cityscapes_psp101.py` and `method.teacher.workdir=T` (or
`method.teacher.torch_checkpoint`).

Arguments: `quick`.
"""

from vssjax import configs_lib

_BASE = configs_lib.load_sibling(__file__, "cityscapes_psp18_baseline.py")


def get_config(arg=None):
  args = configs_lib.parse_arg(arg, quick=False)
  c = _BASE["etc_base"]("r101", "baseline")
  _BASE["cityscapes_data"](c, crop=713)
  c.data.batch_size = 16
  # semseg's cityscapes_pspnet101.yaml: 8 GPUs x 2; its DistributedSampler pads the 2,975 frames
  # to 8 x 372, so an epoch is 186 iterations (max_iter = epochs * len(train_loader)).
  c.train.steps = 200 * 186
  c.train.checkpoint_every = 2000
  if args.quick:
    _BASE["quick_variant"](c)
  c.lock()
  return c
