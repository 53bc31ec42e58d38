"""`optim.name='sgd'` against `torch.optim.SGD`, as the ETC, SD-CPC and DCFM Cityscapes configs
train: momentum 0.9 and weight decay (PyTorch adds wd * p to the gradient before the momentum
buffer, and applies the learning rate after it), parameter groups with their own lr and decay
multipliers, the poly + warm-up learning rate changing every step. The AdamW path has a whole
train step's parity test (test_train_step_parity.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from vssjax import configs_lib
from vssjax.train import optimizer

pytestmark = pytest.mark.parity

STEPS, TOTAL = 6, 10
GROUPS = (("head", 10.0, 1.0), ("norm", 1.0, 0.0))  # (name pattern, lr mult, decay mult)


def test_sgd_with_momentum_decay_and_groups_steps_as_torch():
  optim = configs_lib.base_config().optim
  optim.update(name="sgd", momentum=0.9, lr=0.01, weight_decay=5e-4, warmup_steps=2,
               warmup_ratio=0.1, power=0.9, min_lr=1e-4, param_groups=GROUPS)
  rng = np.random.default_rng(0)
  params = {"backbone": {"conv": {"kernel": rng.normal(size=(3, 4)).astype(np.float32)},
                         "norm": {"scale": rng.normal(size=4).astype(np.float32)}},
            "decode_head": {"kernel": rng.normal(size=(4, 2)).astype(np.float32)}}
  grads = [{"backbone": {"conv": {"kernel": rng.normal(size=(3, 4)).astype(np.float32)},
                         "norm": {"scale": rng.normal(size=4).astype(np.float32)}},
            "decode_head": {"kernel": rng.normal(size=(4, 2)).astype(np.float32)}}
           for _ in range(STEPS)]

  tx, _ = optimizer.make_optimizer(optim, TOTAL, params)
  ours = jax.tree.map(jnp.asarray, params)
  state = tx.init(ours)
  for grad in grads:
    updates, state = tx.update(jax.tree.map(jnp.asarray, grad), state, ours)
    ours = optax.apply_updates(ours, updates)

  # Theirs: one param group per rule, each lr set by hand every step (mmcv's hook does so).
  leaves = {"conv": ("backbone", "conv", "kernel"), "norm": ("backbone", "norm", "scale"),
            "head": ("decode_head", "kernel")}
  tensors = {name: torch.tensor(_at(params, path), requires_grad=True)
             for name, path in leaves.items()}
  multipliers = {"conv": (1.0, 1.0), "norm": (1.0, 0.0), "head": (10.0, 1.0)}
  sgd = torch.optim.SGD([{"params": [tensors[name]], "weight_decay": 5e-4 * decay, "name": name}
                         for name, (_, decay) in multipliers.items()], lr=0.01, momentum=0.9)
  for step, grad in enumerate(grads):
    for group in sgd.param_groups:
      lr_mult = multipliers[group["name"]][0]
      group["lr"] = float(optimizer.poly_warmup_schedule(
          0.01 * lr_mult, TOTAL, 2, 0.1, 0.9, 1e-4)(step))
    for name, path in leaves.items():
      tensors[name].grad = torch.tensor(_at(grad, path))
    sgd.step()

  for name, path in leaves.items():
    np.testing.assert_allclose(np.asarray(_at(ours, path)), tensors[name].detach().numpy(),
                               rtol=1e-6, atol=1e-7, err_msg=name)
    moved = np.abs(np.asarray(_at(ours, path)) - _at(params, path)).max()
    assert moved > 1e-3, name  # the steps moved every tensor: the comparison is not of inits


def _at(tree, path):
  for key in path:
    tree = tree[key]
  return tree
