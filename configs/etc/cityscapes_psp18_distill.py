r"""ETC on Cityscapes: PSPNet-18 + temporal loss + temporal-consistency distillation (specs/etc.md
§4.3) from a frozen PSPNet-101 teacher (cityscapes_psp101.py).

  python -m vssjax.main --config=configs/etc/cityscapes_psp18_distill.py --workdir=D \
      --config.data.cityscapes.root=/data/cityscapes --config.init.torch_checkpoint=resnet18.pth \
      --config.data.flow.cache_dir=/data/flow_cache \
      --config.method.teacher.torch_checkpoint=pspnet101_cityscapes.pth

(or `--config.method.teacher.workdir=T` for a teacher trained here with cityscapes_psp101.py).
The temporal config plus pixel-wise KD (x10), pair-wise cross-frame affinity on the logits (x1,
true cosine), per-frame self-similarity of the PPM features (x1) and the ConvLSTM multi-frame
term (x1, cell frozen at its random init). The release publishes none of these weights nor the
schedule (from scratch or fine-tuned from the temporal model): they are choices, see
`cityscapes_psp18_baseline.DISTILLATION_WEIGHTS`. Memory: the pair-wise term holds two
N x N matrices per sample (N = 97^2 at a 769 crop, ~0.35 GB each in float32).

Arguments: `quick` (its teacher, cityscapes_psp101.py:quick, stays randomly initialised unless
given: a smoke run of the pipeline, not a distillation).
"""

from vssjax import configs_lib

_BASE = configs_lib.load_sibling(__file__, "cityscapes_psp18_baseline.py")


def get_config(arg=None):
  return _BASE["cityscapes_config"]("distill", arg)
