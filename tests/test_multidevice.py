"""Runs tests/multidevice/ in its own pytest process with 4 fake CPU devices (the device count is fixed when
JAX starts, and this process has one)."""

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO, TEST_XLA_LEVEL, child_env

pytestmark = pytest.mark.slow


def test_four_device_runs_equal_one_device_runs():
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=4 {TEST_XLA_LEVEL}",
             JAXTRICKS_OFFLINE="1")
  env.pop("JAXTRICKS_DATA", None)
  r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/multidevice/md_equality.py"],
                     cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
  assert re.search(r"\b4 passed\b", r.stdout) and "failed" not in r.stdout, r.stdout[-2000:]


# the EBM's chains as a lax.scan (--unroll 1): the same sharded program, 9x quicker to compile than unrolled. The
# EBM alone: its state holds everything the others' do (replicated params and optimizer state, as the classifier's
# and the GAN's) plus a buffer split over the devices; the small CNN has no BatchNorm whose statistics would add a
# cross-process reduction of their own.
MULTIHOST_ARGS = {
    "ebm": ["--batch-size", "16", "--channels", "4", "--langevin-steps", "3", "--fresh-steps", "3", "--unroll", "1",
            "--buffer-size", "64", "--fid-samples", "32", "--sample-every", "4", "--fid-every", "4"],
}


def test_two_processes_of_two_devices_equal_one_device(tmp_path):
  """Multi-host as README describes it, on this machine: 2 processes x 2 CPU devices (gloo collectives) through
  jax.distributed, against 1 process on 1 device: same final state, files written once, for the EBM (replicated
  params and optimizer, the buffer sharded; grids and FID from it)."""
  import socket

  import chex
  import jax
  import numpy as np
  import orbax.checkpoint as ocp
  from conftest import make_raw_folder

  make_raw_folder(tmp_path / "raw")
  base = child_env(JAXTRICKS_OFFLINE="1")
  base.pop("JAXTRICKS_DATA", None)
  for module, extra in MULTIHOST_ARGS.items():
    args = ["-m", f"train.{module}", "--data-dir", str(tmp_path / "raw"), "--steps", "4", "--checkpoint-every", "2",
            "--no-progress", *extra]
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, *args, "--workdir", str(tmp_path / f"{module}-2x2")], cwd=REPO,
                              env=dict(base, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                                       JAX_PROCESS_ID=str(i), TFDS_DATA_DIR=str(tmp_path / f"tfds{i}"),
                                       XLA_FLAGS=f"--xla_force_host_platform_device_count=2 {TEST_XLA_LEVEL}",
                                       JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[:3000] for o in outs)
    one = subprocess.run([sys.executable, *args, "--workdir", str(tmp_path / f"{module}-1"), "--devices", "1"],
                         cwd=REPO, env=dict(base, TFDS_DATA_DIR=str(tmp_path / "tfds0")), capture_output=True,
                         text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    path = lambda w: tmp_path / w / "checkpoints" / "4" / "default"
    reference = ocp.StandardCheckpointer().restore(path(f"{module}-1"))
    on_one_device = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=jax.sharding.
                                                                SingleDeviceSharding(jax.devices()[0])), reference)
    sharded = ocp.StandardCheckpointer().restore(path(f"{module}-2x2"), on_one_device)
    chex.assert_trees_all_close(sharded, reference, rtol=1e-4, atol=1e-4, custom_message=module)
    if module == "ebm":   # a checkpoint saved from 4 devices in 2 processes loads in this 1-device process
      from train import ebm_sample
      _, state = ebm_sample.load_model(tmp_path / "ebm-2x2")
      np.testing.assert_array_equal(np.asarray(state["buffer"]["data"]), np.asarray(sharded["state"]["buffer"]["data"]))
    lines = (tmp_path / f"{module}-2x2" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len((tmp_path / f"{module}-1" / "metrics.jsonl").read_text().splitlines())   # one writer
