"""Torch helpers shared by more than one test module: transcriptions of the references vssjax's
ops are compared against (FlowNet2's Resample2d, mmseg's slide_inference), the NHWC -> NCHW move,
and the random weights that make a torch model's wiring errors show in its outputs."""
import numpy as np
import torch
import torch.nn.functional as F


def nchw(x: np.ndarray, contiguous: bool = True) -> torch.Tensor:
  """An NHWC array as the NCHW tensor torch's layers take, in NCHW memory; with `contiguous=False`
  the permuted view itself, in channels-last memory, which torch's kernels keep (some, like the
  resizes, by another code path). Each test keeps the layout its tolerances were set with."""
  x = torch.from_numpy(x).permute(0, 3, 1, 2)
  return x.contiguous() if contiguous else x


def torch_warp(x: torch.Tensor, flow: np.ndarray) -> torch.Tensor:
  """grid_sample with the normalised grid of p + flow; x NCHW, flow [B, H, W, 2]: FlowNet2's
  Resample2d, values and gradients w.r.t. x (the warp's parity and ETC's loss parity)."""
  _, _, height, width = x.shape
  cols = np.arange(width, dtype=np.float32)[None, None, :] + flow[..., 0]
  rows = np.arange(height, dtype=np.float32)[None, :, None] + flow[..., 1]
  grid = np.stack([2 * cols / (width - 1) - 1, 2 * rows / (height - 1) - 1], axis=-1)
  return F.grid_sample(x, torch.from_numpy(grid.astype(np.float32)), mode="bilinear",
                       padding_mode="border", align_corners=True)


def torch_slide(window_logits: np.ndarray, crop, offsets, input_hw, frame_hw) -> np.ndarray:
  """mmseg's slide_inference after each crop's forward pass: the crop's logits resized to the
  crop, padded into the canvas and counted; the canvas divided by the count, resized to the frame,
  argmaxed."""
  h, w = min(crop[0], input_hw[0]), min(crop[1], input_hw[1])
  preds = torch.zeros((1, window_logits.shape[-1]) + tuple(input_hw))
  count = torch.zeros((1, 1) + tuple(input_hw))
  for (y, x), logits in zip(offsets, window_logits):
    logits = F.interpolate(torch.from_numpy(logits).permute(2, 0, 1)[None], (h, w),
                           mode="bilinear", align_corners=False)
    preds += F.pad(logits, (x, input_hw[1] - x - w, y, input_hw[0] - y - h))
    count[:, :, y:y + h, x:x + w] += 1
  preds = F.interpolate(preds / count, tuple(frame_hw), mode="bilinear", align_corners=False)
  return preds.argmax(1)[0].numpy()


def randomize_parameters(model) -> None:
  """Unit-scale random weights (norm scales near 1, biases near 0), so mismatches show."""
  with torch.no_grad():
    for name, param in model.named_parameters():
      if param.ndim > 1:
        param.copy_(torch.randn_like(param) / param[0].numel() ** 0.5)
      else:
        param.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(param))


def randomize_batch_norm_statistics(model) -> None:
  """Running means near 0 and variances near 1 but not equal to them, so that eval-mode
  BatchNorm arithmetic is exercised."""
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.running_mean.normal_(0.0, 0.1)
        module.running_var.uniform_(0.5, 1.5)
