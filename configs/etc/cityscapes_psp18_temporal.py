r"""ETC's PSPNet-18 + temporal loss on Cityscapes: the released training script
(specs/etc.md §4.2).

  python -m vssjax.main --config=configs/etc/cityscapes_psp18_temporal.py --workdir=D \
      --config.data.cityscapes.root=/data/cityscapes --config.init.torch_checkpoint=resnet18.pth \
      --config.data.flow.cache_dir=/data/flow_cache

The baseline's recipe on pairs [partner, target], the partner t+3, t+2, t+1, t-1 or t-2 (uniform),
plus 0.1 x the released temporal loss on the student's logits, the partner warped onto the target
by the flow between them. Flow: OpenCV DIS on the host, cached per frame pair and moved through the
augmentation with the frames (the release uses a frozen FlowNet2 fed normalised images, §4.2).
`--config.method.temporal_formulation=paper` uses the paper's form (probabilities, mask M).

Arguments: `quick`.
"""

from vssjax import configs_lib

_BASE = configs_lib.load_sibling(__file__, "cityscapes_psp18_baseline.py")


def get_config(arg=None):
  return _BASE["cityscapes_config"]("temporal", arg)
