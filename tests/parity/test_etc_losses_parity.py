"""ETC's losses vs torch transcriptions of the release's criteria (specs/etc.md §4)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.parity.torch_reference import nchw, torch_warp
from vssjax.methods import etc_losses
from vssjax.models.conv_lstm import ConvLSTM


@pytest.mark.parity
def test_supervised_loss_matches_torch_weighted_cross_entropy_with_aux():
  rng = np.random.default_rng(0)
  logits, aux = rng.standard_normal((2, 2, 4, 5, 19)).astype(np.float32)
  labels = rng.integers(0, 19, (2, 13, 17))
  labels[0, :3] = 255
  weight = torch.tensor(etc_losses.CITYSCAPES_CLASS_WEIGHTS)
  target = torch.from_numpy(labels)

  def torch_ce(x):
    up = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(13, 17), mode="bilinear",
                       align_corners=True)
    return F.cross_entropy(up, target, weight=weight, ignore_index=255)

  expected = torch_ce(logits) + 0.4 * torch_ce(aux)
  with jax.default_matmul_precision("highest"):
    loss, _ = etc_losses.supervised_loss(jnp.asarray(logits), jnp.asarray(aux),
                                         jnp.asarray(labels))
  np.testing.assert_allclose(loss, expected.item(), rtol=1e-5)


@pytest.mark.parity
def test_released_temporal_loss_and_its_gradients_match_torch():
  """`FlowModel.cal_loss` (specs/etc.md §4.2): MSELoss(Z_t * M, W(Z_s) * M) on logits upsampled
  with align_corners=True, M = exp(-|sum_c (I_t - W(I_s))|), before st_weight (which the method
  applies); gradients reach both."""
  rng = np.random.default_rng(1)
  logits_t, logits_s = rng.standard_normal((2, 2, 7, 9, 5)).astype(np.float32)
  images_t, images_s = rng.standard_normal((2, 2, 25, 33, 3)).astype(np.float32)
  flow = (3 * rng.standard_normal((2, 25, 33, 2))).astype(np.float32)

  z_t, z_s = nchw(logits_t).requires_grad_(), nchw(logits_s).requires_grad_()
  up = lambda z: F.interpolate(z, size=(25, 33), mode="bilinear", align_corners=True)
  warped_image = torch_warp(nchw(images_s), flow)
  mask = torch.exp(-torch.abs(torch.sum(nchw(images_t) - warped_image, dim=1))).unsqueeze(1)
  expected = F.mse_loss(up(z_t) * mask, torch_warp(up(z_s), flow) * mask)
  expected.backward()

  loss, grads = jax.value_and_grad(
      lambda a, b: etc_losses.temporal_loss(a, b, images_t, images_s, flow), argnums=(0, 1))(
          jnp.asarray(logits_t), jnp.asarray(logits_s))
  np.testing.assert_allclose(loss, expected.item(), rtol=1e-5)
  for ours, theirs in zip(grads, (z_t.grad, z_s.grad)):
    np.testing.assert_allclose(ours, theirs.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-9)


def _torch_cosine(query: torch.Tensor, key: torch.Tensor, transposed: bool) -> torch.Tensor:
  """[B, N, N] <q(i), k(j)> over |q(i)||k(j)|, or over |k(i)||q(j)| (`Cos_Attn_no`'s normaliser)."""
  q, k = query.flatten(2).transpose(1, 2), key.flatten(2).transpose(1, 2)
  qn, kn = q.norm(dim=2), k.norm(dim=2)
  norm = kn[:, :, None] * qn[:, None, :] if transposed else qn[:, :, None] * kn[:, None, :]
  return torch.bmm(q, k.transpose(1, 2)) / norm


@pytest.mark.parity
# The release calls kl_div with reduction="mean" (element-wise), which torch warns about.
@pytest.mark.filterwarnings("ignore:reduction. .mean. divides the total loss:UserWarning")
def test_distillation_terms_match_torch():
  """KLDivLoss() 'mean' of the upsampled student, the released cross-frame affinity MSE, the
  2x2-pooled self-similarity MSE and the 16x16-pooled ConvLSTM final-state MSE (§4.3)."""
  rng = np.random.default_rng(2)
  normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  student, teacher = normal(2, 7, 9, 5), normal(2, 11, 13, 5)
  expected = F.kl_div(F.log_softmax(F.interpolate(nchw(student), size=(11, 13), mode="bilinear",
                                                  align_corners=True), dim=1),
                      F.softmax(nchw(teacher), dim=1), reduction="mean")
  np.testing.assert_allclose(etc_losses.pixelwise_distillation(student, teacher),
                             expected.item(), rtol=1e-5)

  s_t, s_s, t_t, t_s = (normal(2, 5, 6, 4) for _ in range(4))
  expected = F.mse_loss(_torch_cosine(nchw(s_t), nchw(s_s), True),
                        _torch_cosine(nchw(t_t), nchw(t_s), True))
  np.testing.assert_allclose(etc_losses.pair_wise_distillation(
      s_t, s_s, t_t, t_s, released_normaliser=True), expected.item(), rtol=1e-5)

  pooled_graph = lambda x, k: (lambda p: _torch_cosine(p, p, False))(F.avg_pool2d(nchw(x), k, k))
  features, teacher_features = normal(2, 13, 13, 6), normal(2, 13, 13, 10)
  expected = F.mse_loss(pooled_graph(features, 2), pooled_graph(teacher_features, 2))
  np.testing.assert_allclose(etc_losses.self_similarity_distillation(features, teacher_features),
                             expected.item(), rtol=1e-5)

  gates = torch.nn.Conv2d(5, 16, 3, padding=1)

  def torch_final_state(sequence):
    h = c = torch.zeros(2, 4, 4, 4)  # hidden 4 on the N x N = 4 x 4 graph
    for x in sequence:
      i, f, o, g = gates(torch.cat([pooled_graph(x, 16).unsqueeze(1), h], 1)).chunk(4, 1)
      c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
      h = torch.sigmoid(o) * torch.tanh(c)
    return h, c

  students = [normal(2, 32, 32, 6) for _ in range(3)]
  teachers = [normal(2, 32, 32, 10) for _ in range(3)]
  with torch.no_grad():
    (h_s, c_s), (h_t, c_t) = torch_final_state(students), torch_final_state(teachers)
  expected = F.mse_loss(h_t, h_s) + F.mse_loss(c_t, c_s)
  cell = {"Gates": {"kernel": jnp.asarray(gates.weight.detach().numpy().transpose(2, 3, 1, 0)),
                    "bias": jnp.asarray(gates.bias.detach().numpy())}}
  loss, _ = etc_losses.multi_frame_distillation(ConvLSTM(), cell, students, teachers)
  np.testing.assert_allclose(loss, expected.item(), rtol=1e-5)
