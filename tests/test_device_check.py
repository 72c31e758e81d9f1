"""benchmarks/tools/device_check.sh at toy size on the CPU: an item whose guard does not fit the budget is skipped, not
started, and the next one that fits still runs under its guard, its results coming back in the one archive;
benchmarks.tools.device_results turns the archive into result files (and reads each item's files as they are
written: the EXACT runs' epochs and accuracies, the long EBM run's FID curve)."""

import io
import json
import subprocess
import sys
import tarfile

import pytest
from conftest import REPO, child_env

from benchmarks.tools import device_results


def _device_check(out, *items, **env):
  return subprocess.run(["bash", "benchmarks/tools/device_check.sh", str(out), "", *items], cwd=REPO,
                        env=child_env(TOY="1", PYTHON=sys.executable, **env), capture_output=True, text=True,
                        timeout=600)


@pytest.mark.slow
def test_device_check_skips_what_the_budget_cannot_hold_and_runs_what_it_can(tmp_path):
  # 100 s: ebm_long's toy guard (115 s) cannot fit and the item is skipped without starting; the toy tests item
  # (pytest of tests/test_optim.py, 60 s guard) fits and runs. The cheapest pair that shows both (no data needed).
  r = _device_check(tmp_path / "out", "ebm_long", "tests", BUDGET_S="100")
  assert r.returncode == 0, r.stderr
  log = (tmp_path / "out" / "device_check.log").read_text()
  assert "ebm_long_s0: skipped (115 s guard" in log, log
  assert "tests: exit 0" in log, log
  assert "ebm_step" not in log and "exact_vgg_m3" not in log      # items not asked for do not run
  with tarfile.open(tmp_path / "out" / "device_check.tgz") as tar:
    names = {m.name.removeprefix("./") for m in tar.getmembers()}
  assert {"items.jsonl", "machine.txt", "tests.xml"} <= names, names
  assert not any(n.startswith("ebm_long") for n in names)      # the skipped item wrote nothing
  assert device_results.main([str(tmp_path / "out" / "device_check.tgz"), "--results", str(tmp_path / "res"),
                              "--docs", str(tmp_path / "docs")]) == 0
  tests, passed, failed, errors, _ = json.loads((tmp_path / "res" / "tests_gpu.json").read_text())["rows"][0]
  assert tests > 0 and passed == tests and failed == errors == 0   # test_optim's tests, counted from the junit xml
  assert sorted(p.name for p in (tmp_path / "res").iterdir()) == ["tests_gpu.json"]


def _read_archive(tmp_path, files: dict[str, bytes]) -> int:
  """device_results.main on a device_check.tgz of `files` {path: bytes}, results into tmp_path/res, docs/ there."""
  archive = tmp_path / "device_check.tgz"
  with tarfile.open(archive, "w:gz") as tar:
    for name, data in files.items():
      info = tarfile.TarInfo(f"./{name}")
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return device_results.main([str(archive), "--results", str(tmp_path / "res"), "--docs", str(tmp_path / "docs")])


def test_device_results_reads_the_exact_runs_and_the_ebm_fid_curve(tmp_path):
  """The archive's files as the trainers write them (metrics.jsonl rows; one test evaluation per epoch; FID keys
  fid_<net>_buffer and _fresh) -> the rows of exact_vgg_m3_gpu.json and ebm_long_gpu.json; ebm_step's JSON is
  copied as it is, the EBM's last grids go to docs."""
  jsonl = lambda rows: "\n".join(json.dumps(r) for r in rows).encode()
  exact = [{"step": s, "loss": 1.0, "steps_per_sec": 50.0} for s in range(1, 470)]
  exact += [{"step": 234, "test/accuracy": 0.98}, {"step": 468, "test/accuracy": 0.975}]   # epochs 1 and 2
  files = {
      "exact_vgg_m3_exact/metrics.jsonl": jsonl(exact),
      "exact_vgg_m3_ce/metrics.jsonl": jsonl([{"step": 1, "loss": 2.3, "steps_per_sec": 10.0}]),   # stopped early
      "ebm_long_s0/metrics.jsonl": jsonl([{"step": 1, "loss": 0.1}, {"step": 1000, "fid_fmnist_buffer": 80.0,
                                          "fid_fmnist_buffer_samples": 500, "fid_fmnist_fresh": 200.0},
                                         {"step": 2000, "fid_fmnist_buffer": 60.0, "fid_fmnist_fresh": 150.0}]),
      "ebm_long_s1/metrics.jsonl": jsonl([{"step": 1000, "fid_fmnist_buffer": 90.0, "fid_fmnist_fresh": 210.0}]),
      "fresh_chains_main.json": json.dumps({"runs": {"main/0": {"argv": ["a"]}, "main/1": {"argv": ["b"]}}}).encode(),
      "fresh_chains_reg1.json": json.dumps({"runs": {"reg1/0": {"argv": ["c"]}}}).encode(),
      "ebm_step_gpu.json": json.dumps({"rows": [["jax", 1.5]]}).encode(),
      "ebm_long_s0/buffer_1000.png": b"old", "ebm_long_s0/buffer_2000.png": b"new",
      "ebm_long_s1/buffer_3000.png": b"another seed's",
      "machine.txt": b"some GPU jax 0.12.0", "items.jsonl": b'{"item": "ebm_long", "skipped": false, "rc": 130, '
                                                           b'"seconds": 120, "guard_s": 120}\n'}
  assert _read_archive(tmp_path, files) == 0
  rows = json.loads((tmp_path / "res" / "exact_vgg_m3_gpu.json").read_text())["rows"]
  assert rows[1] == ["exact", 2, 469, 97.5, 98.0, 50.0]    # epochs completed, steps reached, last and best %, steps/s
  assert rows[0][:3] == ["ce", 0, 1] and rows[0][3] != rows[0][3]   # no evaluation yet: nan accuracy
  ebm = json.loads((tmp_path / "res" / "ebm_long_gpu.json").read_text())
  assert ebm["header"] == ["run", "step", "fid_fmnist_buffer", "fid_fmnist_fresh"]
  assert ebm["rows"] == [["ebm_long_s0", 1000, 80.0, 200.0], ["ebm_long_s0", 2000, 60.0, 150.0],
                         ["ebm_long_s1", 1000, 90.0, 210.0]]
  assert ebm["runs"]["ebm_long_s0"]["steps_reached"] == 2000 and ebm["runs"]["ebm_long_s1"]["steps_reached"] == 1000
  fresh = json.loads((tmp_path / "res" / "ebm_fresh_chains_gpu.json").read_text())["runs"]
  assert sorted(fresh) == ["main/0", "main/1", "reg1/0"] and fresh["reg1/0"]["argv"] == ["c"]
  assert json.loads((tmp_path / "res" / "ebm_step_gpu.json").read_text()) == {"rows": [["jax", 1.5]]}
  assert (tmp_path / "docs" / "ebm_long_buffer_gpu.png").read_bytes() == b"new"


def test_device_check_refuses_an_item_it_does_not_have(tmp_path):
  """An item word that names no item (e.g. one of a closed issue's) is one line and exit 2, before any work."""
  r = _device_check(tmp_path / "out", "mobilenet")
  assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
  assert "no item mobilenet" in r.stderr and "exact_vgg_m3" in r.stderr
  assert not (tmp_path / "out" / "device_check.tgz").exists()


def test_device_results_keeps_the_fresh_chain_runs_a_new_device_run_does_not_measure_again(tmp_path):
  """ebm_fresh_chains_gpu.json is merged: a device run of one new recipe (and the control) adds its runs, the
  earlier runs stay, each stamped with its own card and date, and the new control is keyed by its date."""
  (tmp_path / "res").mkdir()
  old = {"machine": "old card", "date": "2026-12-01",
         "runs": {"main/0": {"argv": ["old"]}, "reg1/0": {"argv": ["r"]}}}
  (tmp_path / "res" / "ebm_fresh_chains_gpu.json").write_text(json.dumps(old))
  files = {"fresh_chains_kl1.json": json.dumps({"runs": {"kl1/0": {"argv": ["k"]}}}).encode(),
           "fresh_chains_main.json": json.dumps({"runs": {"main/0": {"argv": ["new"]}}}).encode(),
           "machine.txt": b"new card jax 0.12.0", "items.jsonl": b""}
  assert _read_archive(tmp_path, files) == 0
  runs = json.loads((tmp_path / "res" / "ebm_fresh_chains_gpu.json").read_text())["runs"]
  date = json.loads((tmp_path / "res" / "ebm_fresh_chains_gpu.json").read_text())["date"]
  assert sorted(runs) == sorted(["kl1/0", "main/0", f"main@{date}/0", "reg1/0"])
  assert runs[f"main@{date}/0"] == {"machine": "new card", "date": date, "argv": ["new"]}
  assert runs["main/0"] == {"machine": "old card", "date": "2026-12-01", "argv": ["old"]}
  assert runs["reg1/0"] == {"machine": "old card", "date": "2026-12-01", "argv": ["r"]}
