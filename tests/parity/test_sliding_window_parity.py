"""A frame through SegFormer's sliding-window predictor vs transformers' SegFormer (torch) run on
each window as mmseg's `slide_inference` runs its model: the same label map.

The torch side resizes the frame with the same host function (its parity is tested in
tests/data_pipelines), then crops, normalises and predicts window by window.
"""
import numpy as np
import torch
import torch.nn.functional as F

from data_pipelines.eval_transforms import eval_resize
from tests.conftest import load_config
from tests.parity.hf_models import random_hf_segformer
from tests.parity.torch_reference import torch_slide
from vssjax.convert.hf_segformer import convert_hf_segformer
from vssjax.methods import get_method
from vssjax.models.layers import IMAGENET_MEAN, IMAGENET_STD
from vssjax.models.mit import MIT_VARIANTS


def test_sliding_window_prediction_matches_torch_window_by_window():
  config = load_config("configs/segformer/cityscapes1024_mitb0.py", "quick")
  b0 = MIT_VARIANTS["b0"]  # B0 widths, one block per stage
  config.model.backbone_overrides.update(embed_dims=b0["embed_dims"], num_heads=b0["num_heads"])
  method = get_method(config)
  windows = method.sliding_windows
  assert windows.crop == (48, 48) and windows.stride == (32, 32)
  hf = random_hf_segformer("b0", (1, 1, 1, 1), num_classes=config.data.num_classes,
                           embed_dim=config.model.decoder_dim)
  variables = convert_hf_segformer({k: v.numpy() for k, v in hf.state_dict().items()},
                                   method.module)
  frame = np.random.default_rng(0).integers(0, 256, (75, 113, 3), dtype=np.uint8)
  [(_, labels)] = method.predictor(variables).push(frame)

  resized = eval_resize(frame, config.data.eval_transform)
  input_hw = resized.shape[:2]
  offsets = windows.offsets(input_hw)
  assert input_hw == (64, 64) and len(offsets) == 4
  images = (torch.from_numpy(resized).float() - torch.tensor(IMAGENET_MEAN)) / torch.tensor(
      IMAGENET_STD)
  with torch.no_grad():
    window_logits = [hf(images[y:y + 48, x:x + 48].permute(2, 0, 1)[None]).logits
                     for y, x in offsets]
    whole = hf(images.permute(2, 0, 1)[None]).logits
  window_logits = torch.cat(window_logits).permute(0, 2, 3, 1).numpy()
  expected = torch_slide(window_logits, windows.crop, offsets, input_hw, frame.shape[:2])
  assert np.unique(expected).size > 2  # not a constant map
  whole = F.interpolate(whole, input_hw, mode="bilinear")
  whole = F.interpolate(whole, frame.shape[:2], mode="bilinear").argmax(1)[0].numpy()
  assert (whole != expected).mean() > 0.01  # sliding is not the whole frame at once
  np.testing.assert_array_equal(np.asarray(labels), expected)
