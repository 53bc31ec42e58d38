"""ETC's losses against hand computations in numpy (weighted CE vs torch: tests/parity)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vssjax.methods import etc_losses
from vssjax.models.conv_lstm import ConvLSTM
from vssjax.ops.warp import occlusion_mask, warp

RNG = np.random.default_rng(0)


def _normal(*shape, scale=1.0):
  return (scale * RNG.standard_normal(shape)).astype(np.float32)


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _cosine(a, b):
  """numpy [B, N, C] x [B, N, C] -> [B, N, N] cosine matrix."""
  a = a / np.linalg.norm(a, axis=-1, keepdims=True)
  b = b / np.linalg.norm(b, axis=-1, keepdims=True)
  return np.einsum("bic,bjc->bij", a, b)


def test_supervised_loss_needs_one_weight_per_class():
  logits = jnp.zeros((1, 2, 2, 9))
  with pytest.raises(ValueError, match="19 class weights for 9 classes"):
    etc_losses.supervised_loss(logits, None, jnp.zeros((1, 4, 4), jnp.int32))
  loss, _ = etc_losses.supervised_loss(logits, logits, jnp.zeros((1, 4, 4), jnp.int32),
                                       class_weights=None)
  assert float(loss) == pytest.approx(1.4 * np.log(9))


def test_supervised_loss_reports_the_main_logits_pixel_accuracy():
  """The logged accuracy is the main head's, not the auxiliary head's that the loss also scores."""
  labels = jnp.zeros((1, 4, 4), jnp.int32)
  right, wrong = (jnp.zeros((1, 2, 2, 3)).at[..., c].set(1.0) for c in (0, 1))
  _, accuracy = etc_losses.supervised_loss(right, wrong, labels, class_weights=None)
  assert float(accuracy) == 1.0


def _static_scene():
  images = _normal(1, 6, 8, 3)
  logits = _normal(1, 3, 4, 5)
  return images, logits, np.zeros((1, 6, 8, 2), np.float32)


@pytest.mark.parametrize("formulation", ["released", "paper"])
def test_temporal_loss_is_zero_for_a_static_scene_and_grows_with_disagreement(formulation):
  images, logits, flow = _static_scene()
  noise = _normal(*logits.shape)

  @jax.jit
  def loss_fn(delta):
    return etc_losses.temporal_loss(logits, logits + delta * noise, images, images, flow,
                                    formulation=formulation)

  loss = lambda delta: float(loss_fn(delta))

  values = [loss(delta) for delta in (0.0, 0.5, 2.0)]
  assert values[0] == pytest.approx(0.0, abs=1e-12) and 0 < values[1] < values[2]


def test_temporal_loss_formulas_and_mask_power():
  images_t, logits_t, flow = _static_scene()
  images_s = images_t + 0.1  # a photometric change: signed channel sum 0.3 -> mask exp(-0.3)
  logits_s = _normal(*logits_t.shape)
  up = lambda x: np.asarray(etc_losses.upsample(jnp.asarray(x), (6, 8)))  # align_corners=True
  z_t, z_s = up(logits_t), up(logits_s)
  mask = np.exp(-0.3)
  loss_fn = jax.jit(etc_losses.temporal_loss, static_argnames="formulation")
  released = loss_fn(logits_t, logits_s, images_t, images_s, flow)
  np.testing.assert_allclose(released, np.mean(mask**2 * (z_t - z_s) ** 2), rtol=1e-4)
  paper = loss_fn(logits_t, logits_s, images_t, images_s, flow, formulation="paper")
  per_pixel = ((_softmax(z_t) - _softmax(z_s)) ** 2).sum(-1)
  np.testing.assert_allclose(paper, np.mean(mask * per_pixel), rtol=1e-4)
  with pytest.raises(ValueError, match="formulation"):
    etc_losses.temporal_loss(logits_t, logits_s, images_t, images_s, flow, formulation="both")


def test_temporal_loss_gradient_reaches_both_frames_of_the_student():
  images, logits_t, _ = _static_scene()
  flow = np.full((1, 6, 8, 2), 0.7, np.float32)
  grad_t, grad_s = jax.jit(jax.grad(
      lambda a, b: etc_losses.temporal_loss(a, b, images, images + 0.2, flow), argnums=(0, 1)))(
          jnp.asarray(logits_t), jnp.asarray(_normal(*logits_t.shape)))
  assert float(jnp.abs(grad_t).sum()) > 0 and float(jnp.abs(grad_s).sum()) > 0


def test_pixelwise_distillation_is_elementwise_mean_kl_and_stops_teacher_gradients():
  student, teacher = _normal(2, 3, 3, 4), _normal(2, 3, 3, 4, scale=2.0)
  p_t, p_s = _softmax(teacher / 2.0), _softmax(student / 2.0)
  expected = np.mean(p_t * (np.log(p_t) - np.log(p_s)))
  loss_fn = lambda s, t: etc_losses.pixelwise_distillation(s, t, temperature=2.0)
  np.testing.assert_allclose(loss_fn(student, teacher), expected, rtol=1e-5)
  grad_s, grad_t = jax.jit(jax.grad(loss_fn, argnums=(0, 1)))(jnp.asarray(student),
                                                               jnp.asarray(teacher))
  assert float(jnp.abs(grad_s).sum()) > 0 and float(jnp.abs(grad_t).sum()) == 0


def test_cross_frame_affinity_true_cosine_and_released_normaliser():
  x_t, x_s = _normal(2, 2, 3, 4), _normal(2, 2, 3, 4)
  a, b = x_t.reshape(2, 6, 4), x_s.reshape(2, 6, 4)
  with jax.default_matmul_precision("highest"):
    cosine = etc_losses.cross_frame_affinity(x_t, x_s)
    released = etc_losses.cross_frame_affinity(x_t, x_s, released_normaliser=True)
  np.testing.assert_allclose(cosine, _cosine(a, b), atol=1e-6)
  norm_a, norm_b = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
  expected = np.einsum("bic,bjc->bij", a, b) / (norm_b[:, :, None] * norm_a[:, None, :])
  np.testing.assert_allclose(released, expected, atol=1e-6)


def test_pair_wise_distillation_value_and_gradients():
  s_t, s_s, t_t, t_s = (_normal(1, 2, 2, 3) for _ in range(4))
  expected = np.mean((_cosine(s_t.reshape(1, 4, 3), s_s.reshape(1, 4, 3))
                      - _cosine(t_t.reshape(1, 4, 3), t_s.reshape(1, 4, 3))) ** 2)
  with jax.default_matmul_precision("highest"):
    np.testing.assert_allclose(etc_losses.pair_wise_distillation(s_t, s_s, t_t, t_s), expected,
                               rtol=1e-5)
    grads = jax.jit(jax.grad(etc_losses.pair_wise_distillation, argnums=(0, 1, 2, 3)))(
        *map(jnp.asarray, (s_t, s_s, t_t, t_s)))
  assert all(float(jnp.abs(g).sum()) > 0 for g in grads[:2])
  assert all(float(jnp.abs(g).sum()) == 0 for g in grads[2:])


def test_self_similarity_distillation_pools_and_allows_other_teacher_widths():
  student, teacher = _normal(1, 5, 4, 3), _normal(1, 5, 4, 7)  # 5x4 -> pooled 2x2 (row 5 dropped)

  def pooled(x):
    x = x[:, :4].reshape(1, 2, 2, 2, 2, -1).mean(axis=(2, 4))
    return x.reshape(1, 4, -1)

  expected = np.mean((_cosine(pooled(student), pooled(student))
                      - _cosine(pooled(teacher), pooled(teacher))) ** 2)
  with jax.default_matmul_precision("highest"):
    loss = etc_losses.self_similarity_distillation(student, teacher)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  assert float(etc_losses.centre_weighted(loss, 1.0, 2.0)) == pytest.approx(float(loss) + 1.2)


def test_multi_frame_distillation_values_and_adversarial_gradient_routing():
  lstm = ConvLSTM()
  student = [jnp.asarray(_normal(1, 8, 8, 3)) for _ in range(3)]
  teacher = [jnp.asarray(_normal(1, 8, 8, 5)) for _ in range(3)]
  params = lstm.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))["params"]

  @jax.jit
  def run(student, teacher, params):
    def terms(student, teacher, params):
      return etc_losses.multi_frame_distillation(lstm, params, student, teacher,
                                                 rule="adversarial", pool=4)
    (loss, objective) = terms(student, teacher, params)
    loss_grads = jax.grad(lambda *a: terms(*a)[0], argnums=(0, 1, 2))(student, teacher, params)
    objective_grads = jax.grad(lambda *a: terms(*a)[1], argnums=2)(student, teacher, params)
    same, _ = terms(student, student, params)
    return loss, objective, same, loss_grads, objective_grads

  loss, objective, same, (g_student, g_teacher, g_lstm), g_objective = run(student, teacher,
                                                                            params)
  size = lambda tree: sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(tree))
  assert float(loss) > 0 and float(same) == 0.0
  # The student learns from the distillation loss, the teacher from nothing, and the cell only
  # from its own objective mean(1 - h_T), which lies in (0, 2) since h is in (-1, 1).
  assert size(g_student) > 0 and size(g_teacher) == 0 and size(g_lstm) == 0
  assert 0 < float(objective) < 2 and size(g_objective) > 0


def test_adversarial_cell_objective_is_computed_on_the_teacher_sequence():
  """The cell's own objective is mean(1 - h_T) on the TEACHER's self-similarity sequence (the
  release's `CriterionLSTMGAN`); computed on the student's, the cell would learn to push the
  student's states up instead of telling the teacher's apart."""
  lstm = ConvLSTM()
  student = [jnp.asarray(_normal(1, 8, 8, 3)) for _ in range(3)]
  # A uniform teacher (every pooled cosine 1) against a random student (cosines near 0).
  teacher = [jnp.asarray(1.0 + _normal(1, 8, 8, 5, scale=0.1)) for _ in range(3)]
  params = lstm.init(jax.random.key(0), jnp.zeros((1, 2, 2, 1)))["params"]

  def objective_on(features):
    """mean(1 - h_T) of the cell unrolled on the numpy self-cosine maps of the 4x4-pooled maps."""
    pooled = [np.asarray(x).reshape(1, 2, 4, 2, 4, -1).mean(axis=(2, 4)).reshape(1, 4, -1)
              for x in features]
    graphs = [jnp.asarray(_cosine(x, x)[..., None], jnp.float32) for x in pooled]
    hidden, _ = lstm.apply({"params": params}, graphs, method=ConvLSTM.unroll)
    return float(jnp.mean(1.0 - hidden))

  with jax.default_matmul_precision("highest"):
    _, objective = jax.jit(lambda s, t, p: etc_losses.multi_frame_distillation(
        lstm, p, s, t, rule="adversarial", pool=4))(student, teacher, params)
    on_teacher, on_student = objective_on(teacher), objective_on(student)
  assert abs(on_teacher - on_student) > 1e-3  # the two sequences give different objectives
  assert float(objective) == pytest.approx(on_teacher, rel=1e-5, abs=1e-6)


def test_self_similarity_of_tiny_feature_vectors_is_still_a_cosine():
  """The norm floor is torch's cosine_similarity eps (1e-8 on the norm, 1e-16 on its square):
  features of norm 1e-6 (a quiet, near-zero activation map) keep cosine 1 on the diagonal; a floor
  of 1e-4 would shrink every similarity of such a map toward 0."""
  x = _normal(1, 2, 3, 4)
  tiny = x / np.linalg.norm(x, axis=-1, keepdims=True) * 1e-6
  similarity = np.asarray(etc_losses.self_similarity(tiny))
  np.testing.assert_allclose(np.diagonal(similarity, axis1=1, axis2=2), 1.0, rtol=1e-5)
  x = x.reshape(1, 6, 4)
  np.testing.assert_allclose(similarity, _cosine(x, x), atol=1e-5)


def _whole_batch_temporal(logits_t, logits_s, images_t, images_s, flow, formulation):
  """The temporal loss with the whole batch upsampled at once (the formula, as released)."""
  mask = occlusion_mask(images_t, warp(images_s, flow))
  z_t, z_s = (etc_losses.upsample(x, images_t.shape[1:3]) for x in (logits_t, logits_s))
  if formulation == "released":
    return jnp.mean(jnp.square(mask * z_t - mask * warp(z_s, flow)))
  q_t, q_s = jax.nn.softmax(z_t), jax.nn.softmax(z_s)
  return jnp.mean(mask * jnp.sum(jnp.square(q_t - warp(q_s, flow)), -1, keepdims=True))


def _whole_batch_pair_wise(s_t, s_s, t_t, t_s):
  return jnp.mean(jnp.square(etc_losses.cross_frame_affinity(s_t, s_s)
                             - etc_losses.cross_frame_affinity(t_t, t_s)))


def _whole_batch_self_similarity(student, teacher):
  pool = lambda x: x.reshape(3, 2, 2, 2, 2, -1).mean((2, 4))  # 2x2 average pooling of 4x4
  return jnp.mean(jnp.square(etc_losses.self_similarity(pool(student))
                             - etc_losses.self_similarity(pool(teacher))))


def _losses_and_inputs(case):
  """(the loss, its whole-batch formula, the student inputs they differentiate) for `case`."""
  if case == "self-similarity":
    teacher = _normal(3, 4, 4, 7)  # another width than the student's, as a teacher may have
    return (lambda x: etc_losses.self_similarity_distillation(x, teacher, pool=2),
            lambda x: _whole_batch_self_similarity(x, teacher), [_normal(3, 4, 4, 5)])
  logits = [_normal(3, 3, 4, 5) for _ in range(2)]
  if case == "pair-wise":
    teachers = _normal(3, 3, 4, 5), _normal(3, 3, 4, 5)
    return (lambda a, b: etc_losses.pair_wise_distillation(a, b, *teachers),
            lambda a, b: _whole_batch_pair_wise(a, b, *teachers), logits)
  formulation = case.split(", ")[1]
  data = _normal(3, 12, 16, 3), _normal(3, 12, 16, 3), _normal(3, 12, 16, 2)
  return (lambda a, b: etc_losses.temporal_loss(a, b, *data, formulation=formulation),
          lambda a, b: _whole_batch_temporal(a, b, *data, formulation), logits)


@pytest.mark.parametrize("case", ["temporal, released", "temporal, paper", "pair-wise",
                                  "self-similarity"])
def test_losses_taken_in_rounds_have_the_whole_batchs_value_and_gradients(case):
  """The temporal, pair-wise and self-similarity losses take the batch a few samples at a time
  (`rounds`)."""
  loss, whole_batch, inputs = _losses_and_inputs(case)
  inputs = [jnp.asarray(x) for x in inputs]
  argnums = tuple(range(len(inputs)))
  value, gradients = jax.jit(jax.value_and_grad(loss, argnums=argnums))(*inputs)
  expected, expected_gradients = jax.value_and_grad(whole_batch, argnums=argnums)(*inputs)
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  for gradient, expected_gradient in zip(gradients, expected_gradients):
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-4,
                               atol=1e-5 * float(jnp.abs(expected_gradient).max()))
