"""Mesh construction, batch-size checks and regex sharding rules on 4 fake CPU devices."""

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from vssjax import parallel
from vssjax.errors import SetupError


def test_mesh_shapes_and_errors():
  assert dict(parallel.make_mesh().shape) == {"data": 4, "fsdp": 1}
  assert dict(parallel.make_mesh(-1, 2).shape) == {"data": 2, "fsdp": 2}
  with pytest.raises(ValueError, match="fsdp=3 does not divide"):
    parallel.make_mesh(-1, 3)
  with pytest.raises(ValueError, match=r"data.batch_size=6 is not divisible by the 4 devices of "
                     r"the mesh \{'data': 4, 'fsdp': 1\}: take a multiple of 4 "
                     r"\(--config.data.batch_size=8\) or, in one process, fewer devices "
                     r"\(--config.mesh.data=N, N x mesh.fsdp dividing it\)$"):
    parallel.check_batch_size(6, parallel.make_mesh())
  assert parallel.check_batch_size(8, parallel.make_mesh()) == 8  # the rows of the one process
  assert parallel.per_process_batch_size(8, 2) == 4
  with pytest.raises(SetupError, match="data.batch_size=5 is not divisible by the 2 processes"):
    parallel.per_process_batch_size(5, 2)


def test_batch_shards_is_the_batch_axes_size_of_the_mesh_traced_under():
  assert parallel.batch_shards() == 1  # no mesh
  for data, fsdp in [(4, 1), (2, 2), (2, 1)]:
    with jax.sharding.use_abstract_mesh(parallel.make_mesh(data, fsdp).abstract_mesh):
      assert parallel.batch_shards() == data * fsdp


def test_target_platform_is_this_processes_unless_compiling_for_another():
  assert parallel.target_platform() == jax.default_backend() == "cpu"
  with parallel.compiling_for("tpu"):
    assert parallel.target_platform() == "tpu"
    with parallel.compiling_for("gpu"):
      assert parallel.target_platform() == "gpu"
    assert parallel.target_platform() == "tpu"
  with pytest.raises(ZeroDivisionError), parallel.compiling_for("gpu"):
    _ = 1 / 0
  assert parallel.target_platform() == "cpu"


def test_sharding_rules_first_match_and_largest_divisible_axis():
  mesh = parallel.make_mesh(2, 2)
  state = {"params": {"dense": {"kernel": jnp.zeros((3, 8)), "bias": jnp.zeros(8)},
                      "norm": {"scale": jnp.zeros(8)}},
           "opt": {"mu": {"dense": {"kernel": jnp.zeros((3, 8))}}}}
  rules = (("norm", "replicate"), ("kernel$", "fsdp"), ("bias", "fsdp"))
  shardings = parallel.state_shardings(jax.eval_shape(lambda: state), mesh, rules)
  assert shardings["params"]["dense"]["kernel"].spec == P(None, "fsdp")  # 3 does not divide by 2
  assert shardings["opt"]["mu"]["dense"]["kernel"].spec == P(None, "fsdp")  # moments follow
  assert shardings["params"]["dense"]["bias"].spec == P("fsdp")
  assert shardings["params"]["norm"]["scale"].spec == P()
  with pytest.raises(ValueError, match="'replicate' or 'fsdp'"):
    parallel.state_shardings(jax.eval_shape(lambda: state), mesh, (("x", "tp"),))


def test_config_mistakes_in_the_mesh_and_rules_are_setup_errors():
  """Said in one line by the commands: a mesh that does not fit the devices, a rule's kind, and a
  rule that matches nothing (a misspelt pattern would leave every tensor replicated, silently)."""
  with pytest.raises(SetupError, match="mesh.fsdp=3 does not divide the 4 devices"):
    parallel.make_mesh(-1, 3)
  with pytest.raises(SetupError, match=r"mesh.data=4 x mesh.fsdp=2 needs more than the 4"):
    parallel.make_mesh(4, 2)
  # Each axis's own mistake, named as it is (not as too many devices, or as not dividing them).
  for data, fsdp, said in ((0, 1, r"mesh.data=0: an axis has at least 1 device \(-1: every"),
                           (-2, 1, r"mesh.data=-2: an axis has at least 1 device"),
                           (-1, 0, r"mesh.fsdp=0: an axis has at least 1 device$"),
                           (-1, 8, r"mesh.fsdp=8 needs more than the 4 devices$")):
    with pytest.raises(SetupError, match=said):
      parallel.make_mesh(data, fsdp)
  mesh = parallel.make_mesh(2, 2)
  state = jax.eval_shape(lambda: {"params": {"dense": {"kernel": jnp.zeros((3, 8))}}})
  with pytest.raises(SetupError, match=r"rule \('kernel', 'tp'\): the kind must be"):
    parallel.state_shardings(state, mesh, (("kernel", "tp"),))
  with pytest.raises(SetupError, match=r"rule \('kernal\$', 'fsdp'\) matches no path of the "
                     r"train state \(such as 'params/dense/kernel'"):
    parallel.state_shardings(state, mesh, (("kernel$", "replicate"), ("kernal$", "fsdp")))
  # A flat pair (a shell's tuple of one rule without its comma) unpacked into a ValueError, a bad
  # pattern was re's traceback; both once the data had been indexed (now: before, in the loop).
  with pytest.raises(SetupError, match=r"sharding_rules: 'kernel\$' is not a \(regex, kind\) pair "
                     r"of strings; a tuple of one rule needs its trailing comma"):
    parallel.state_shardings(state, mesh, ("kernel$", "fsdp"))
  with pytest.raises(SetupError, match=r"rule \('kernel\[', 'fsdp'\): not a regular expression "
                     r"\(unterminated character set"):
    parallel.checked_sharding_rules((("kernel[", "fsdp"),))


def test_a_state_without_leaves_has_no_shardings_and_any_rule_matches_nothing():
  """No path to show as an example: no rule is still no sharding, and a rule still a SetupError
  (not an IndexError)."""
  mesh = parallel.make_mesh(2, 2)
  assert parallel.state_shardings({"params": {}}, mesh) == {"params": {}}
  with pytest.raises(SetupError, match=r"rule \('kernel\$', 'fsdp'\) matches no path of the "
                     r"train state \(it has none\)"):
    parallel.state_shardings({"params": {}}, mesh, (("kernel$", "fsdp"),))


def test_process_local_batch_becomes_a_global_array():
  mesh = parallel.make_mesh(2, 2)
  local = {"frames": np.arange(8 * 3).reshape(8, 3).astype(np.float32)}
  batch = parallel.to_global(local, mesh)
  assert batch["frames"].shape == (8, 3)
  assert len(batch["frames"].sharding.device_set) == 4
  np.testing.assert_array_equal(np.asarray(batch["frames"]), local["frames"])


def test_distributed_start_needs_the_process_id_with_the_process_count(monkeypatch):
  monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
  monkeypatch.delenv("JAX_PROCESS_ID", raising=False)
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES is set but JAX_PROCESS_ID is not"):
    parallel.initialize_distributed("on")


_CLUSTER_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS",
                      "OMPI_COMM_WORLD_SIZE", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


@pytest.mark.parametrize("mode, environment, joins", [
    ("auto", {}, False),  # a laptop, or one process of a job: no runtime started
    ("auto", {"SLURM_NTASKS": "1"}, False),
    ("auto", {"SLURM_NTASKS": "4"}, True),
    ("auto", {"TPU_WORKER_HOSTNAMES": "host-0"}, False),  # a single-host TPU
    ("auto", {"TPU_WORKER_HOSTNAMES": "host-0,host-1"}, True),  # a pod slice
    ("auto", {"OMPI_COMM_WORLD_SIZE": "2"}, True),
    ("auto", {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True),
    ("off", {"SLURM_NTASKS": "4"}, False),
    ("on", {}, True),  # JAX's own detection (or its error) decides
])
def test_the_runtime_starts_where_a_launcher_says_this_is_one_of_several_processes(
    monkeypatch, mode, environment, joins):
  for name in _CLUSTER_VARIABLES:
    monkeypatch.delenv(name, raising=False)
  for name, value in environment.items():
    monkeypatch.setenv(name, value)
  monkeypatch.setattr(parallel, "_on_a_cloud_tpu_vm", lambda: False)
  calls = []
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
  monkeypatch.setattr(jax.config, "update", lambda name, value: calls.append({name: value}))
  parallel.initialize_distributed(mode)
  assert calls == ([{"jax_enable_preemption_service": True}, {}] if joins else [])


@pytest.mark.parametrize("pod_slice", [True, False])
def test_auto_on_a_cloud_tpu_vm_asks_jax_whether_it_is_a_worker_of_a_pod_slice(monkeypatch,
                                                                              pod_slice):
  """A GCE TPU VM names its slice's workers in its metadata, not its environment: 'auto' missed
  pod slices, whose processes then ran without the preemption service. JAX's own detection
  decides there; where it finds no cluster, one process runs alone (no error)."""
  for name in _CLUSTER_VARIABLES:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(parallel, "_on_a_cloud_tpu_vm", lambda: True)
  joined = []

  def initialize(**kwargs):
    if not pod_slice:
      raise ValueError("coordinator_address should be defined.")
    joined.append(kwargs)

  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax.distributed, "initialize", initialize)
  monkeypatch.setattr(jax.config, "update", lambda name, value: None)
  parallel.initialize_distributed("auto")
  assert joined == ([{}] if pod_slice else [])


def test_a_cluster_jax_cannot_join_is_a_setup_error_that_says_what_to_set(monkeypatch):
  def no_cluster(**kwargs):
    raise ValueError("coordinator_address should be defined.")

  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax.distributed, "initialize", no_cluster)
  monkeypatch.setattr(jax.config, "update", lambda name, value: None)
  with pytest.raises(SetupError, match=r"--distributed=on: JAX found no cluster to join: "
                     r"coordinator_address should be defined\. On a bare host set "
                     r"JAX_COORDINATOR_ADDRESS"):
    parallel.initialize_distributed("on")
  with pytest.raises(ValueError, match="--distributed must be auto, on or off, got 'yes'"):
    parallel.initialize_distributed("yes")


def test_local_copies_put_each_array_whole_on_each_device():
  """Prediction runs per device: split arrays (a batch-sharded one here) are gathered whole, and a
  replicated one gives each device the replica it holds, without a copy."""
  mesh = parallel.make_mesh(2, 2)
  values = np.arange(8, dtype=np.float32).reshape(4, 2)
  split = parallel.to_global({"w": values}, mesh)["w"]
  replicated = jax.device_put(np.ones(3, np.float32), parallel.replicated(mesh))
  tree = {"split": split, "replicated": replicated, "host": np.zeros(2, np.float32), "none": None}
  devices = jax.local_devices()[1:3]
  copies = parallel.local_copies(tree, devices)
  assert len(copies) == 2
  for device, copy in zip(devices, copies):
    assert copy["none"] is None
    for name in ("split", "replicated", "host"):
      assert copy[name].devices() == {device}, name
    np.testing.assert_array_equal(copy["split"], values)
    replica = next(s.data for s in replicated.addressable_shards if s.device == device)
    assert copy["replicated"].unsafe_buffer_pointer() == replica.unsafe_buffer_pointer()


def test_prediction_devices_default_to_one_on_the_cpu_and_refuse_more_than_there_are():
  local = jax.local_devices()
  assert parallel.prediction_devices(0) == local[:1]  # CPU devices share the same cores
  assert parallel.prediction_devices(3) == local[:3]
  assert parallel.prediction_devices(len(local)) == local  # every one, asked for by number
  for count in (-1, len(local) + 1):
    with pytest.raises(SetupError, match=rf"eval.devices={count}: .* 1 to {len(local)}"):
      parallel.prediction_devices(count)


def test_map_over_devices_gives_device_k_items_k_k_plus_k_and_keeps_the_items_order():
  """Each item on its device's copy, in a thread per device; the results in the items' order."""
  threads = {}

  def on_device(item: int, copy: str) -> tuple[int, str]:
    threads.setdefault(copy, set()).add(threading.current_thread().name)
    return item, copy

  assert parallel.map_over_devices(list(range(5)), ["d0", "d1"], on_device) == [
      (0, "d0"), (1, "d1"), (2, "d0"), (3, "d1"), (4, "d0")]
  assert all(len(names) == 1 and next(iter(names)).startswith("predict_device")
             for names in threads.values())
  assert parallel.map_over_devices([7], ["d0", "d1", "d2"], on_device) == [(7, "d0")]
  assert parallel.map_over_devices([], ["d0", "d1"], on_device) == []


def test_map_over_devices_waits_before_each_item_for_what_its_device_runs_ahead():
  """`ahead(share, copy)`: a device's context whose `wait_for(i)` comes before its i-th item,
  entered before the first and left after the last (`CompileAhead`)."""
  log = []

  class Ahead:
    def __init__(self, share, copy):
      self.copy = copy
      log.append(("enter", copy, tuple(share)))

    def __enter__(self):
      return self

    def __exit__(self, *exc_info):
      log.append(("exit", self.copy))

    def wait_for(self, index):
      log.append(("wait", self.copy, index))

  def on_device(item: int, copy: str) -> int:
    log.append(("item", copy, item))
    return item

  assert parallel.map_over_devices(list(range(5)), ["d0", "d1"], on_device, ahead=Ahead) == [
      0, 1, 2, 3, 4]
  per_device = {copy: [entry for entry in log if entry[1] == copy] for copy in ("d0", "d1")}
  assert per_device["d0"] == [("enter", "d0", (0, 2, 4)), ("wait", "d0", 0), ("item", "d0", 0),
                              ("wait", "d0", 1), ("item", "d0", 2), ("wait", "d0", 2),
                              ("item", "d0", 4), ("exit", "d0")]
  assert per_device["d1"] == [("enter", "d1", (1, 3)), ("wait", "d1", 0), ("item", "d1", 1),
                              ("wait", "d1", 1), ("item", "d1", 3), ("exit", "d1")]


def test_a_failing_device_stops_the_others_before_their_next_item_and_its_error_is_raised():
  """Device 1 fails at its first item while device 0 is at its own; device 0 finishes that one
  once the failure is marked, and takes no other."""
  started, failed = threading.Event(), threading.Event()
  done = []

  def on_device(item: int, copy: str) -> int:
    if copy == "d1":
      started.wait(30)
      raise RuntimeError("device lost")
    started.set()
    assert failed.wait(30)  # set by map_over_devices when device 1's error left it
    done.append(item)
    return item

  with pytest.raises(RuntimeError, match="device lost"):
    parallel.map_over_devices(list(range(6)), ["d0", "d1"], on_device, failed=failed)
  assert done == [0]


def test_share_over_devices_gives_each_device_with_an_item_its_share_and_copy():
  """Device k's share is items k, k + K, ...; a device without one is not called."""
  shares = parallel.share_over_devices(
      list("abcde"), ["d0", "d1", "d2"], lambda k, share, copy: (k, share, copy),
      threading.Event())
  assert shares == [(0, ["a", "d"], "d0"), (1, ["b", "e"], "d1"), (2, ["c"], "d2")]
  assert parallel.share_over_devices(["a"], ["d0", "d1"], lambda k, share, copy: (k, share),
                                     threading.Event()) == [(0, ["a"])]


def test_a_mesh_of_some_devices_is_refused_with_two_processes(monkeypatch):
  """Each process loads its share of the batch: with 2 processes a mesh that leaves devices out
  would drop rows, so mesh.data below the devices is a SetupError, not a silent loss."""
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  with pytest.raises(SetupError, match=r"uses 2 of the 4 devices, and with 2 processes the mesh "
                                       r"must take them all"):
    parallel.make_mesh(1, 2)


def test_the_first_matching_rule_wins_over_a_later_one():
  """A specific rule listed before a general one decides: the dense kernel stays replicated
  although `kernel$` would split it."""
  mesh = parallel.make_mesh(2, 2)
  state = jax.eval_shape(lambda: {"params": {"dense": {"kernel": jnp.zeros((4, 8))}}})
  rules = (("dense/kernel", "replicate"), ("kernel$", "fsdp"))
  assert parallel.state_shardings(state, mesh, rules)["params"]["dense"]["kernel"].spec == P()


def test_fsdp_splits_the_largest_divisible_axis():
  """A (4, 8) kernel on fsdp=2 is split on its 8 axis, so each device holds the least of it."""
  mesh = parallel.make_mesh(2, 2)
  state = jax.eval_shape(lambda: {"params": {"kernel": jnp.zeros((4, 8))}})
  shardings = parallel.state_shardings(state, mesh, (("kernel", "fsdp"),))
  assert shardings["params"]["kernel"].spec == P(None, "fsdp")
