"""Runs tests/multidevice/ in its own pytest process with 4 fake CPU devices (the device count is fixed when
JAX starts, and this process has one)."""

import os
import re
import subprocess
import sys

from conftest import REPO


def test_four_device_runs_equal_one_device_runs():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAXTRICKS_OFFLINE="1")
  env.pop("JAXTRICKS_DATA", None)
  r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/multidevice/md_equality.py"],
                     cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
  assert re.search(r"\b6 passed\b", r.stdout) and "failed" not in r.stdout, r.stdout[-2000:]
