"""Smoke test of `--mode=bench` on the SegFormer quick config: it runs and reports sane numbers.

No timing assertions: the shared 2-core CPU makes times meaningless as pass/fail criteria.
"""

import json
import math

import jax
import numpy as np

from tests.conftest import load_config
from vssjax import bench
from vssjax.methods import get_method
from vssjax.train import loop


def test_bench_reports_finite_numbers(tmp_path):
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.bench.update(dtypes=("float32",), warmup=1, repeats=2, train_repeats=1, torch=False)
  results = bench.run(config, str(tmp_path))

  method = get_method(config)
  spec = loop.batch_spec(config)
  shapes = jax.eval_shape(
      lambda: method.init(jax.random.PRNGKey(0),
                          {k: jax.numpy.zeros(s.shape, s.dtype) for k, s in spec.items()}))
  assert results["params"] == sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))

  rows = {(r["phase"], r["batch"]): r for r in results["rows"]}
  assert set(rows) == {("forward", 1), ("forward", 4), ("train_step", 4)}
  for row in rows.values():
    for key in ("compile_s", "latency_ms", "frames_per_s"):
      assert math.isfinite(row[key]) and row[key] > 0, (row["phase"], key, row[key])
    assert row["gflops"] > 0
    assert row["peak_memory_mb"] is None  # the CPU backend reports no memory statistics
  assert rows[("forward", 4)]["gflops"] > rows[("forward", 1)]["gflops"]
  saved = json.loads((tmp_path / "bench.json").read_text())
  assert saved["params"] == results["params"]
  assert (tmp_path / "bench.md").read_text().count("| forward |") == 2
