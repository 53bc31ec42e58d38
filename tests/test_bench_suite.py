"""The benchmark suite driver: applies each entry's overrides and assembles one report."""

import re
import types

from data_pipelines.clip_sampling import clip_length
from vssjax import bench, bench_suite, bench_torch
from vssjax.methods.backbones import remat_policy_name


def test_suite_entries_load_with_their_overrides():
  for entry in bench_suite.SUITE:
    config = bench_suite.load_entry_config(entry)
    assert tuple(config.data.train_transform.crop_size) == (480, 480), entry.name
    assert config.data.num_classes == 124, entry.name  # the 124-class VSPW setting
    assert config.data.batch_size * clip_length(config.clip) == 16, entry.name  # training batch
    # One dtype an entry: a device command's time limit cuts between dtypes, not inside one.
    assert len(config.bench.dtypes) == 1, entry.name
  b5 = bench_suite.load_entry_config(next(e for e in bench_suite.SUITE
                                          if e.name == "segformer_b5_bf16"))
  assert b5.bench.torch_compile is False and tuple(b5.bench.dtypes) == ("bfloat16",)


def test_the_remat_entry_rematerialises_with_a_policy_the_method_accepts():
  """`segformer_b1_bf16_remat` is measured against `segformer_b1_bf16`'s rows: without its
  `model.remat` it would time the kept activations again, and with a name that is no policy it
  would fail only on the device, where the method is built."""
  entry = next(e for e in bench_suite.SUITE if e.name == "segformer_b1_bf16_remat")
  assert remat_policy_name(bench_suite.load_entry_config(entry).model) == "nothing_saveable"


def test_the_documented_device_commands_run_every_entry_once():
  """docs/benchmarks.md splits the suite over several device commands: an entry added to `SUITE`
  but to no `--only` list would never be measured."""
  text = (bench_suite.REPO / "docs" / "benchmarks.md").read_text()
  named = [name for names in re.findall(r"--only=([\w,]+)", text) for name in names.split(",")]
  assert sorted(named) == sorted(entry.name for entry in bench_suite.SUITE)


def test_report_has_the_device_commands_and_each_table(tmp_path, monkeypatch, capsys):
  seen = []

  def fake_run(config, workdir):  # the real bench is covered by tests/test_bench.py
    seen.append((config.method.name, tuple(config.bench.batch_sizes)))
    (tmp_path / workdir).mkdir(parents=True, exist_ok=True)
    (tmp_path / workdir / "bench.md").write_text(f"TABLE {config.model.backbone}")
    return {}

  monkeypatch.setattr(bench, "run", fake_run)
  monkeypatch.setattr(bench, "add_torch_compile_rows", lambda config, results, workdir: None)
  entries = [e for e in bench_suite.SUITE if e.name in ("segformer_b1_bf16", "dcfm_b2_bf16")]
  out = tmp_path / "reports" / "report.md"  # a folder not made yet: the suite makes it
  report = bench_suite.run_suite(entries, str(tmp_path), str(out))
  assert seen == [("segformer", (16,)), ("dcfm", (1, 8))]
  assert "--mode=bench" in report and "TABLE b1" in report and "TABLE b2" in report
  # Each entry's command reruns it alone: its overrides quoted as the --config flag parses them.
  assert ("""--config.bench.dtypes='("bfloat16",)' --config.bench.batch_sizes='(16,)'"""
          in report)
  assert "cpu" in report  # the device the numbers came from
  # The suite's own command reruns it: main() refuses it without --out.
  assert (f"python -m vssjax.bench_suite --workdir={tmp_path} --out={out} "
          "--only=segformer_b1_bf16,dcfm_b2_bf16\n" in report)
  assert out.read_text() == report
  # The bench's own progress lines come between these: the output says whose they are.
  printed = capsys.readouterr().out
  assert printed.startswith("bench_suite: no accelerator (JAX backend cpu)")  # the test's device
  assert "bench_suite: entry 1/2 segformer_b1_bf16 (configs/segformer/vspw_mitb1.py): running" \
      in printed
  assert re.search(r"bench_suite: entry 2/2 dcfm_b2_bf16: done in \d+ s", printed)


def test_torch_compile_rows_come_after_every_entrys_jax_and_eager_rows(tmp_path, monkeypatch):
  calls = []

  def fake_run(config, workdir):
    calls.append(("run", config.model.backbone, config.bench.torch_compile))
    (tmp_path / workdir).mkdir(parents=True, exist_ok=True)
    (tmp_path / workdir / "bench.md").write_text(f"JAX AND EAGER {config.model.backbone}")
    return {"backbone": config.model.backbone}

  def fake_compile_rows(config, results, workdir):
    calls.append(("torch.compile", results["backbone"], config.bench.torch_compile))
    (tmp_path / workdir / "bench.md").write_text(f"WITH COMPILE {config.model.backbone}")

  monkeypatch.setattr(bench, "run", fake_run)
  monkeypatch.setattr(bench, "add_torch_compile_rows", fake_compile_rows)
  monkeypatch.setattr(bench_torch, "available", lambda: True)
  names = ("segformer_b1_bf16", "segformer_b5_bf16", "dcfm_b2_bf16", "segformer_b1_bf16_cudnn")
  entries = [e for e in bench_suite.SUITE if e.name in names]
  report = bench_suite.run_suite(entries, str(tmp_path), str(tmp_path / "report.md"))
  # B5 has no torch.compile rows, DCFM and the cuDNN variant no PyTorch reference at all: only
  # B1's compile rows are deferred, after the last entry.
  assert calls == [("run", "b1", False), ("run", "b5", False), ("run", "b2", True),
                   ("run", "b1", True), ("torch.compile", "b1", False)]
  assert "WITH COMPILE b1" in report and "JAX AND EAGER b1" not in report.split("## ")[1]
  assert report.index("## segformer_b1_bf16") < report.index("## segformer_b5_bf16")


def test_a_failing_entry_is_reported_and_the_others_still_run(tmp_path, monkeypatch, capsys):
  calls = []

  def fake_run(config, workdir):
    if config.model.attention_impl == "cudnn":
      raise RuntimeError("no cuDNN attention here")
    calls.append(("run", config.model.backbone))
    (tmp_path / workdir).mkdir(parents=True, exist_ok=True)
    (tmp_path / workdir / "bench.md").write_text(f"TABLE {config.model.backbone}")
    return {}

  def fake_compile_rows(config, results, workdir):
    calls.append(("torch.compile", config.model.backbone))
    raise RuntimeError("inductor failed")

  monkeypatch.setattr(bench, "run", fake_run)
  monkeypatch.setattr(bench, "add_torch_compile_rows", fake_compile_rows)
  monkeypatch.setattr(bench_torch, "available", lambda: True)
  names = ("segformer_b1_bf16", "segformer_b1_bf16_cudnn", "dcfm_b2_bf16")
  entries = [e for e in bench_suite.SUITE if e.name in names]
  report = bench_suite.run_suite(entries, str(tmp_path), str(tmp_path / "report.md"))
  assert calls == [("run", "b1"), ("run", "b2"), ("torch.compile", "b1")]
  cudnn = report.split("## segformer_b1_bf16_cudnn")[1].split("## ")[0]
  assert "failed: RuntimeError('no cuDNN attention here')" in cudnn and "TABLE" not in cudnn
  b1 = report.split("## segformer_b1_bf16\n")[1].split("## ")[0]
  assert "TABLE b1" in b1 and "failed: RuntimeError('inductor failed')" in b1
  assert "TABLE b2" in report
  printed = capsys.readouterr()
  assert "segformer_b1_bf16_cudnn: failed after" in printed.out
  assert "no cuDNN attention here" in printed.err  # the traceback


def test_without_only_main_runs_every_entry_and_with_it_only_those_named(tmp_path, monkeypatch):
  """`python -m vssjax.bench_suite --workdir=... --out=...` with no --only measures the whole
  suite; --only=x the entries named."""
  ran = []
  monkeypatch.setattr(bench_suite, "run_suite",
                      lambda entries, workdir, out, profile: ran.append([e.name for e in entries]))
  for only in ([], ["dcfm_b2_bf16"]):
    fake_flags = types.SimpleNamespace(workdir=str(tmp_path), out=str(tmp_path / "report.md"),
                                       only=only, profile=False)
    monkeypatch.setattr(bench_suite.flags, "FLAGS", fake_flags)
    bench_suite.main(["bench_suite"])
  assert ran == [[e.name for e in bench_suite.SUITE], ["dcfm_b2_bf16"]]


def test_an_entrys_wall_time_adds_its_torch_compile_rows_to_its_first_pass(tmp_path, monkeypatch):
  """The report's `Entry wall time` is what the entry cost the device command: its JAX and eager
  rows plus its deferred torch.compile rows, not the last pass alone."""
  clock = [0.0]

  def fake_run(config, workdir):
    clock[0] += 100.0
    (tmp_path / workdir).mkdir(parents=True, exist_ok=True)
    return {}

  def fake_compile_rows(config, results, workdir):
    clock[0] += 30.0

  monkeypatch.setattr(bench_suite, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
  monkeypatch.setattr(bench, "run", fake_run)
  monkeypatch.setattr(bench, "add_torch_compile_rows", fake_compile_rows)
  monkeypatch.setattr(bench_torch, "available", lambda: True)
  entries = [e for e in bench_suite.SUITE if e.name == "segformer_b1_bf16"]
  report = bench_suite.run_suite(entries, str(tmp_path), str(tmp_path / "report.md"))
  assert "Entry wall time 130 s (compiles included)." in report


def test_an_entry_whose_bench_failed_gets_no_torch_compile_rows(tmp_path, monkeypatch):
  """A SegFormer entry whose JAX rows failed has no results to add torch.compile rows to: the
  suite must not spend minutes compiling its reference (nor fail on its missing results)."""
  calls = []

  def failing_run(config, workdir):
    raise RuntimeError("out of memory")

  monkeypatch.setattr(bench, "run", failing_run)
  monkeypatch.setattr(bench, "add_torch_compile_rows", lambda *args: calls.append(args))
  monkeypatch.setattr(bench_torch, "available", lambda: True)
  entries = [e for e in bench_suite.SUITE if e.name == "segformer_b1_bf16"]
  report = bench_suite.run_suite(entries, str(tmp_path), str(tmp_path / "report.md"))
  assert not calls
  assert "failed: RuntimeError('out of memory')" in report
