"""Runs tests/multidevice/ in its own pytest process with 4 fake CPU devices (the device count is fixed when
JAX starts, and this process has one): 1 device against 4 for the classifier, the GAN and the EBM, and 2 processes
x 2 devices (multi-host) against the same 1-device EBM run."""

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO, TEST_XLA_LEVEL

pytestmark = pytest.mark.slow(first=True)   # the suite's longest test: started first (conftest.py)


def test_four_device_and_two_process_runs_equal_one_device_runs():
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=4 {TEST_XLA_LEVEL}",
             JAXTRICKS_OFFLINE="1")
  env.pop("JAXTRICKS_DATA", None)
  r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/multidevice/md_equality.py"],
                     cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
  assert re.search(r"\b5 passed\b", r.stdout) and "failed" not in r.stdout, r.stdout[-2000:]
