"""Shared test set-up: CPU only, 4 fake devices for sharding tests, grain's absl-flag workaround."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

# Must happen before any JAX computation: sharding tests use a 4-device mesh.
jax.config.update("jax_num_cpu_devices", 4)

from absl import flags  # noqa: E402

# grain 0.2.18 reads absl flags in mp_prefetch (google/grain#1355); pytest never parses them.
flags.FLAGS.mark_as_parsed()
