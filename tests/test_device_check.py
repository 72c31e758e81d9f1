"""benchmarks/tools/device_check.sh at toy size on the CPU: an item runs under its guard and its results come back
in the one archive; an item whose guard does not fit the budget is skipped, not started;
benchmarks.tools.device_results turns the archive into result files (the toy MobileNet's step rate among them)."""

import json
import subprocess
import sys
import tarfile

import pytest
from conftest import REPO, child_env, make_raw_folder

pytestmark = pytest.mark.slow


def _device_check(out, data, *items, **env):
  return subprocess.run(["bash", "benchmarks/tools/device_check.sh", str(out), str(data), *items], cwd=REPO,
                        env=child_env(TOY="1", PYTHON=sys.executable, **env), capture_output=True, text=True,
                        timeout=600)


def test_device_check_runs_an_item_and_skips_what_the_budget_cannot_hold(tmp_path):
  from benchmarks.tools import device_results
  make_raw_folder(tmp_path / "raw")   # a tiny Fashion-MNIST as the script's DATA: its plumbing, not its numbers
  # 320 s: the 300 s guard of the first item fits even when the versions step is slow on a loaded machine (7 s
  # seen, which a 305 s budget could not hold); the toy GAN's 315 s guard fits only in the first 5 s, long gone
  # once the toy MobileNet (its compile alone > 5 s) has run
  r = _device_check(tmp_path / "out", tmp_path / "raw", "mobilenet_seed", "gan_step", BUDGET_S="320")
  assert r.returncode == 0, r.stderr
  log = (tmp_path / "out" / "device_check.log").read_text()
  assert "mobilenet_seed: exit 0" in log, log
  assert "gan_step: skipped (315 s guard" in log, log   # its guard no longer fits in what is left of 320 s
  assert "cifar" not in log and "langevin" not in log   # items not asked for do not run
  with tarfile.open(tmp_path / "out" / "device_check.tgz") as tar:
    names = {m.name.removeprefix("./") for m in tar.getmembers()}
  assert {"items.jsonl", "machine.txt", "mobilenet_seed/metrics.jsonl"} <= names, names
  assert device_results.main([str(tmp_path / "out" / "device_check.tgz"), "--results", str(tmp_path / "res"),
                              "--docs", str(tmp_path / "docs")]) == 0
  row = json.loads((tmp_path / "res" / "mobilenet_gpu.json").read_text())["rows"][0]
  assert row[0] == "seed" and row[1] == "1.0" and row[-1] > 0     # one evaluation (3 steps), a measured step rate
  assert 0 <= row[-2] <= 100                                        # --eval-flips's accuracy, read from the run
