"""The cross-entropy at label size: its conventions on hand-computed cases, its value and gradient
against the plain composition (upsample the whole batch, then the loss), and the rounds it takes
the batch in, alone and split over the 4 fake devices; OHEM and the Dice loss likewise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import collectives
from vssjax import parallel
from vssjax.errors import SetupError
from vssjax.methods import losses
from vssjax.ops.resize import resize_bilinear


def _plain_cross_entropy(logits, labels, *, average="valid", class_weights=None,
                         align_corners=False):
  """The reference: the whole batch upsampled at once, then torch's (weighted) cross-entropy."""
  up = resize_bilinear(logits.astype(jnp.float32), labels.shape[-2:], align_corners=align_corners)
  valid = labels != 255
  safe = jnp.where(valid, labels, 0)
  nll = jax.nn.logsumexp(up, -1) - jnp.take_along_axis(up, safe[..., None], -1)[..., 0]
  weights = (valid.astype(jnp.float32) if class_weights is None
             else jnp.where(valid, jnp.asarray(class_weights, jnp.float32)[safe], 0.0))
  total = jnp.sum(jnp.where(valid, nll, 0.0) * weights)
  return total / (labels.size if average == "all" else weights.sum())


def _plain_dice(logits, labels):
  """The reference Dice: the whole batch upsampled at once, every image's classes together."""
  up = resize_bilinear(logits.astype(jnp.float32), labels.shape[-2:])
  valid = (labels != 255)[..., None]
  p = jax.nn.softmax(up, -1) * valid
  t = jax.nn.one_hot(jnp.where(valid[..., 0], labels, 0), up.shape[-1]) * valid
  dice = (2 * jnp.sum(p * t, (1, 2)) + 1) / (jnp.sum(p * p + t * t, (1, 2)) + 1)
  return jnp.mean(1 - dice)


def _batch(rng, n=4, dtype=jnp.float32):
  logits = jnp.asarray(rng.normal(size=(n, 6, 5, 7)), dtype)
  labels = rng.integers(0, 7, size=(n, 24, 20))
  labels[:, :3] = 255
  return logits, jnp.asarray(labels, jnp.int32)


def test_cross_entropy_valid_and_all_averages_and_the_pixel_accuracy():
  # Two pixels, two classes: logits (0, 0) -> nll log 2; (log 3, 0) with label 1 -> nll log 4;
  # the third pixel is ignored. Logits already at label size are not resized.
  logits = jnp.array([[[[0.0, 0.0], [np.log(3.0), 0.0], [5.0, -5.0]]]])
  labels = jnp.array([[[0, 1, 255]]])
  valid, accuracy = losses.cross_entropy_at_label_size(logits, labels, average="valid")
  all_pixels, _ = losses.cross_entropy_at_label_size(logits, labels, average="all")
  np.testing.assert_allclose(valid, (np.log(2) + np.log(4)) / 2, rtol=1e-6)
  np.testing.assert_allclose(all_pixels, (np.log(2) + np.log(4)) / 3, rtol=1e-6)
  # argmax picks class 0 at both valid pixels (ties go to the first): one of two right, the
  # ignored pixel's right answer not counted.
  np.testing.assert_allclose(accuracy, 0.5)
  with pytest.raises(SetupError, match="average"):
    losses.cross_entropy_at_label_size(logits, labels, average="mean")
  with pytest.raises(ValueError, match="3 class weights for 2 classes"):
    losses.cross_entropy_at_label_size(logits, labels, class_weights=[1.0, 1.0, 1.0])


def test_the_pixel_accuracy_skips_an_ignore_label_inside_the_class_range():
  """An ignored pixel predicted as its (ignore) label is not a right answer: with the default 255
  no argmax reaches it, an `ignore_label` among the class ids does."""
  logits = jnp.array([[[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]]])  # argmax 0, 0, 1
  _, accuracy = losses.cross_entropy_at_label_size(logits, jnp.array([[[0, 0, 1]]]),
                                                   ignore_label=0)
  np.testing.assert_allclose(accuracy, 1.0)  # the one valid pixel; the two ignored ones match


@pytest.mark.parametrize("align_corners, samples", [(False, [0.0, 0.25, 0.75, 1.0]),
                                                    (True, [0.0, 1 / 3, 2 / 3, 1.0])])
def test_logits_are_upsampled_as_torch_interpolates(align_corners, samples):
  """mmseg's resize before every loss (align_corners=False): a row (0, 1) doubled samples at
  -0.25, 0.25, 0.75, 1.25, edges clamped; ETC's losses use align_corners=True."""
  logits = jnp.array([[[[0.0, 0.0], [0.0, 1.0]]]])  # [N=1, h=1, w=2, C=2]: class 1's row (0, 1)
  loss, _ = losses.cross_entropy_at_label_size(logits, jnp.zeros((1, 1, 4), jnp.int32),
                                               align_corners=align_corners)
  np.testing.assert_allclose(loss, np.mean(np.log1p(np.exp(samples))), rtol=1e-6)


@pytest.mark.parametrize("options", [{}, {"average": "all"}, {"align_corners": True},
                                     {"class_weights": [0.5, 1.0, 2.0, 0.0, 1.5, 1.0, 3.0]}])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_value_and_gradient_are_the_plain_compositions(options, dtype):
  logits, labels = _batch(np.random.default_rng(0), dtype=dtype)
  value, gradient = jax.jit(jax.value_and_grad(
      lambda x: losses.cross_entropy_at_label_size(x, labels, **options)[0]))(logits)
  expected, expected_gradient = jax.jit(jax.value_and_grad(
      lambda x: _plain_cross_entropy(x, labels, **options)))(logits)
  assert gradient.dtype == dtype
  np.testing.assert_allclose(value, expected, rtol=1e-6)
  tolerance = 1e-6 if dtype == jnp.float32 else 1e-2  # bf16: one rounding of the gradient
  np.testing.assert_allclose(np.asarray(gradient, np.float32),
                             np.asarray(expected_gradient, np.float32),
                             rtol=tolerance, atol=tolerance * np.abs(expected_gradient).max())


def test_a_weighted_loss_passes_its_weight_to_the_gradient():
  """The backward pass scales the gradient kept from the forward pass by the loss's cotangent."""
  logits, labels = _batch(np.random.default_rng(1))
  gradient = jax.grad(lambda x: 0.4 * losses.cross_entropy_at_label_size(x, labels)[0])(logits)
  expected = jax.grad(lambda x: 0.4 * _plain_cross_entropy(x, labels))(logits)
  np.testing.assert_allclose(gradient, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_the_pixel_accuracy_scores_the_upsampled_logits():
  logits, labels = _batch(np.random.default_rng(2))
  _, accuracy = losses.cross_entropy_at_label_size(logits, labels, align_corners=True)
  up = resize_bilinear(logits, labels.shape[-2:], align_corners=True)
  valid = labels != 255
  np.testing.assert_allclose(accuracy, np.sum((np.argmax(up, -1) == labels) & valid) / valid.sum(),
                             rtol=1e-6)


@pytest.mark.parametrize("loss", ["plain", "ohem", "dice"])
@pytest.mark.parametrize("data, fsdp", [(4, 1), (2, 2)])
def test_split_over_devices_each_device_takes_its_own_samples(data, fsdp, loss):
  """Traced under the train step's mesh, each round takes one sample of every device's share: the
  only cross-device traffic is scalars (the two sums; OHEM's pixel counts too: no gather of
  another device's logits, labels or losses, as rounds of the batch's first samples or a sort of
  its losses would need), and the loss and gradient are the whole batch's."""
  mesh = parallel.make_mesh(data, fsdp)
  split = parallel.batch_sharding(mesh)
  logits, labels = jax.device_put(_batch(np.random.default_rng(3), n=8), split)
  loss_fn = {"plain": losses.cross_entropy_at_label_size,
             "ohem": losses.ohem_cross_entropy_at_label_size,
             "dice": lambda x, y: (losses.dice_loss_at_label_size(x, y),)}[loss]

  def loss_and_gradient(x, y):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return jax.value_and_grad(lambda x: loss_fn(x, y)[0])(x)

  program = jax.jit(loss_and_gradient, out_shardings=(parallel.replicated(mesh), split))
  compiled = program.lower(logits, labels).compile()
  assert collectives(compiled) and all(shape in ("f32[]", "s32[]")
                                       for _, shapes in collectives(compiled) for shape in shapes)
  value, gradient = program(logits, labels)
  whole = {"plain": _plain_cross_entropy, "dice": _plain_dice,
           "ohem": lambda x, y: losses.ohem_cross_entropy_at_label_size(x, y)[0]}[loss]
  expected, expected_gradient = jax.value_and_grad(whole)(logits, labels)
  np.testing.assert_allclose(value, expected, rtol=1e-6)
  np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-6,
                             atol=1e-6 * np.abs(expected_gradient).max())


def test_the_upsampled_batch_is_never_kept_whole():
  """What the rounds are for: XLA's temporaries for the value and gradient grow with the batch by
  less than half an upsampled sample a sample (the label-sized masks and weights), while the plain
  composition keeps the whole batch's upsampled logits for the backward pass. One round's own
  temporaries are a few upsampled samples, by XLA's version: 3.5 at a batch of 8 on jax 0.10.2,
  4.6 on 0.11.2, which grows 0.23 of one a sample (0.08 on 0.10.2)."""
  sample = 120 * 120 * 12 * 4  # one sample's upsampled float32 logits

  def temporaries(loss, n):
    logits = jax.ShapeDtypeStruct((n, 30, 30, 12), jnp.float32)
    labels = jax.ShapeDtypeStruct((n, 120, 120), jnp.int32)
    compiled = jax.jit(jax.value_and_grad(loss)).lower(logits, labels).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  rounds = lambda x, y: losses.cross_entropy_at_label_size(x, y)[0]
  assert temporaries(rounds, 8) - temporaries(rounds, 4) < 4 * sample / 2
  assert temporaries(_plain_cross_entropy, 8) > 8 * sample


def _torch_ohem(logits, labels, *, n_min, threshold):
  """The DCFM release's OhemCELoss2D (specs/dcfm.md §8), in torch: the per-pixel losses at label
  size (an ignored pixel's 0), sorted descending; those above the threshold if the one at index
  n_min is, else the first n_min; their mean. Returns (value, gradient at the logits, whether
  the threshold chose)."""
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel
  x = torch.tensor(np.asarray(logits, np.float32)).permute(0, 3, 1, 2).requires_grad_(True)
  up = F.interpolate(x, size=labels.shape[-2:], mode="bilinear", align_corners=False)
  loss = F.cross_entropy(up, torch.tensor(np.asarray(labels, np.int64)), ignore_index=255,
                         reduction="none").view(-1)
  loss, _ = torch.sort(loss, descending=True)
  by_threshold = bool(loss[n_min] > threshold)
  loss = loss[loss > threshold] if by_threshold else loss[:n_min]
  value = loss.mean()
  value.backward()
  return float(value.detach()), x.grad.permute(0, 2, 3, 1).numpy(), by_threshold


@pytest.mark.parametrize("case", ["above_threshold", "top_k", "top_k_into_ignored"])
def test_ohem_is_the_release_s_ohem_cross_entropy(case):
  """Value and gradient against torch's OhemCELoss2D in each of its branches: many pixels above
  -log 0.7 (their mean); few (the N/16 largest); so few valid pixels that the N/16 largest reach
  the ignored pixels' zeros (tied: they count in the mean, with no gradient)."""
  rng = np.random.default_rng(7)
  logits, labels = _batch(rng)
  labels = np.asarray(labels)
  if case != "above_threshold":  # confident and right nearly everywhere: few losses above
    classes = np.broadcast_to(rng.integers(0, 7, (4, 1, 1)), (4, 6, 5))  # one per sample
    logits = jnp.asarray(12.0 * np.eye(7, dtype=np.float32)[classes]
                         + 0.3 * rng.normal(size=(4, 6, 5, 7)).astype(np.float32))  # no ties
    up = np.asarray(resize_bilinear(logits, labels.shape[-2:]))
    labels = np.where(labels == 255, 255, np.argmax(up, -1))
    labels[0, 10:12] = (labels[0, 10:12] + 1) % 7  # a few hard pixels
  if case == "top_k_into_ignored":
    labels[:, 3:] = np.where(np.arange(20) < 1, labels[:, 3:], 255)  # 1 valid column of 20
  labels = jnp.asarray(labels, jnp.int32)
  n_min = labels.size // 16
  value, gradient = jax.jit(jax.value_and_grad(
      lambda x: losses.ohem_cross_entropy_at_label_size(x, labels)[0]))(logits)
  want, want_gradient, by_threshold = _torch_ohem(logits, labels, n_min=n_min,
                                                  threshold=-np.log(0.7))
  assert by_threshold == (case == "above_threshold")
  assert (int(np.sum(np.asarray(labels) != 255)) < n_min) == (case == "top_k_into_ignored")
  np.testing.assert_allclose(value, want, rtol=1e-5)
  np.testing.assert_allclose(gradient, want_gradient, rtol=1e-4,
                             atol=1e-5 * np.abs(want_gradient).max())


def test_dice_is_the_class_mean_of_each_image_s_soft_dice_over_its_labelled_pixels():
  """mmseg's Dice with its defaults (smooth 1, exponent 2), per image and class over the labelled
  pixels, against numpy in float64; the ignored pixels count nowhere (changing their logits
  changes nothing)."""
  logits, labels = _batch(np.random.default_rng(7))
  up = np.asarray(resize_bilinear(logits, labels.shape[-2:]), np.float64)
  probabilities = np.exp(up - up.max(-1, keepdims=True))
  probabilities /= probabilities.sum(-1, keepdims=True)
  losses_per_image = []
  for image, label in zip(probabilities, np.asarray(labels)):
    valid = label != 255
    per_class = []
    for c in range(up.shape[-1]):
      p, t = image[..., c][valid], (label[valid] == c).astype(np.float64)
      per_class.append(1 - (2 * np.sum(p * t) + 1) / (np.sum(p ** 2) + np.sum(t ** 2) + 1))
    losses_per_image.append(np.mean(per_class))
  dice = jax.jit(losses.dice_loss_at_label_size)
  np.testing.assert_allclose(dice(logits, labels), np.mean(losses_per_image), rtol=1e-5)
  # Rows 0-2 of the labels are ignored: the logits' row 0 reaches only their upsampled rows 0-1.
  np.testing.assert_array_equal(dice(logits.at[:, 0].add(5.0), labels), dice(logits, labels))


def test_kth_largest_is_exact_with_ties_and_zeros():
  """OHEM's cut without a sort: the bisection on float32 bit patterns gives the k-th largest
  exactly, ties and zeros (ignored pixels) included, for every k."""
  rng = np.random.default_rng(8)
  values = np.concatenate([rng.exponential(size=40), np.full(10, 0.25), np.zeros(14),
                           [np.finfo(np.float32).max, np.finfo(np.float32).tiny]])
  values = rng.permutation(values.astype(np.float32)).reshape(2, 33)
  ranked = np.sort(values.ravel())[::-1]
  kth = jax.jit(losses._kth_largest)  # pylint: disable=protected-access
  for k in range(1, values.size + 1):
    assert kth(values, np.int32(k)) == ranked[k - 1], k
