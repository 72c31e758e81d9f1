"""Data parallelism on 4 (fake CPU) devices computes what 1 device computes, for the classifier, the GAN and the
EBM: a few steps with the same global batch and seed give allclose params (and, for the GAN, BatchNorm statistics of
the sharded batch; for the EBM, replay buffers).

Runs in its own process (tests/test_multidevice.py starts it) because the device count is fixed at start-up:
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m pytest -p no:cacheprovider tests/multidevice/md_equality.py

Multi-host, 2 processes x 2 devices, is compared here too, with the same 1-device EBM run as its reference (made
once, by the ebm_one fixture).
"""

import socket
import subprocess
import sys
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import EBM_PLAIN, REPO, TEST_XLA_LEVEL, child_env, make_raw_folder  # noqa: E402

from jaxtricks import classifier, cli  # noqa: E402
from train import classify  # noqa: E402
from train import ebm as train_ebm
from train import gan as train_gan


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
  root = tmp_path_factory.mktemp("md")
  make_raw_folder(root / "raw")
  return root


def _state_on_disk(workdir: Path, step: int):
  import orbax.checkpoint as ocp
  return ocp.StandardCheckpointer().restore((workdir / "checkpoints" / str(step) / "default").absolute())["state"]


def _run_both(trainer, raw, tmp_path, **kw):
  assert jax.device_count() == 4, "run with XLA_FLAGS=--xla_force_host_platform_device_count=4"
  out = {}
  for n in (1, 4):
    config = trainer.Config(data_dir=str(raw / "raw"), workdir=str(tmp_path / f"d{n}"), devices=n, progress=False,
                            checkpoint_every=kw["steps"], **kw)
    final = trainer.run(config)
    leaves = [x for x in jax.tree.leaves(final) if hasattr(x, "sharding")]
    out[n] = (final, {len(x.sharding.device_set) for x in leaves})
  return out


def test_classifier_4_devices_equal_1(raw, tmp_path, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  out = _run_both(classify, raw, tmp_path, model="cnn", batch_size=32, steps=6, eval_every=6)
  assert out[1][1] == {1} and out[4][1] == {4}           # really placed on 1 and on 4 devices
  chex.assert_trees_all_close(out[1][0].params, out[4][0].params, rtol=1e-4, atol=1e-5)
  # the run moved the params: the comparison is not of two initializations
  config = classify.Config()
  init = classifier.init(jax.random.split(jax.random.PRNGKey(0), 3)[0], classify.make_model(config), (1, 28, 28, 1),
                         classify.optimizer(config, 6)).params
  assert not np.allclose(jax.tree.leaves(init)[0], jax.tree.leaves(out[4][0].params)[0])


def test_gan_4_devices_equal_1(raw, tmp_path, monkeypatch):
  """The only BatchNorm of these runs (the classifier's small CNN has none): its statistics over a batch split over
  4 devices equal those over the whole batch on 1, and so do the params the training-mode steps reach."""
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  out = _run_both(train_gan, raw, tmp_path, steps=3, batch_size=16, width=8, z_dim=8, fid_samples=64,
                  sample_every=3)
  assert out[4][1] == {4} and jax.tree.leaves(out[1][0].batch_stats)
  chex.assert_trees_all_close(out[1][0].params, out[4][0].params, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(out[1][0].batch_stats, out[4][0].batch_stats, rtol=1e-4, atol=1e-5)


# The EBM's 4-step run, as the flags of train.ebm: the same settings for the 1-device reference (in this process),
# the 4-device runs and the 2 processes x 2 devices. The chains as a lax.scan (--unroll 1): the same sharded program,
# 9x quicker to compile than unrolled. The EBM's state holds everything the classifier's and the GAN's do
# (replicated params and optimizer state) plus a buffer split over the devices. In float32: equal to 1e-4 is what
# the split must give; bf16 compute (train.ebm's auto on an AVX-512 BF16 host) rounds differently per split.
EBM_ARGS = [*EBM_PLAIN, "--batch-size", "16", "--channels", "4", "--langevin-steps", "3", "--fresh-steps", "3", "--unroll", "1",
            "--buffer-size", "64", "--fid-samples", "32", "--sample-every", "4", "--fid-every", "4",
            "--checkpoint-every", "2", "--no-progress"]


def _ebm_config(raw, workdir, *extra):
  return cli.parse(train_ebm.Config, ["--data-dir", str(raw / "raw"), "--workdir", str(workdir), *EBM_ARGS, *extra])


@pytest.fixture(scope="module")
def ebm_one(raw):
  """(workdir, final state) of the EBM's 4 steps on 1 device: the reference of the 4-device and 2-process runs."""
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("TFDS_DATA_DIR", str(raw / "tfds-one"))
    workdir = raw / "ebm-one"
    return workdir, train_ebm.run(_ebm_config(raw, workdir, "--steps", "4", "--devices", "1"))


def test_ebm_4_devices_equal_1_buffer_split_and_resumed(raw, ebm_one, tmp_path, monkeypatch):
  """The EBM on 4 devices equals it on 1 (params; the replay buffer split a quarter per device); a run resumed on
  4 devices equals the uninterrupted one (the buffer restored split); then train.ebm_sample with the chains split
  over 4 devices draws what it draws on 1, from an ensemble of those two workdirs."""
  from train import ebm_sample
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  run = lambda workdir, steps: train_ebm.run(_ebm_config(raw, tmp_path / workdir, "--steps", str(steps),
                                                         "--devices", "4"))
  one = ebm_one[1]
  straight = run("a", 4)
  devices = lambda state: {len(x.sharding.device_set) for x in jax.tree.leaves(state) if hasattr(x, "sharding")}
  assert devices(one) == {1} and devices(straight) == {4}     # really placed on 1 and on 4 devices
  assert straight.buffer.data.sharding.spec == jax.sharding.PartitionSpec("data")
  assert len(straight.buffer.data.addressable_shards) == 4
  assert straight.buffer.data.addressable_shards[0].data.shape[0] == 16     # a quarter of the buffer per device
  chex.assert_trees_all_close(one.params, straight.params, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(one.buffer.count), np.asarray(straight.buffer.count))
  # uint8 buffers: chains equal up to float order may round to the neighbouring level in a few pixels
  diff = np.abs(np.asarray(one.buffer.data, np.int16) - np.asarray(straight.buffer.data, np.int16))
  assert diff.max() <= 1 and (diff > 0).mean() < 1e-3

  run("b", 2)
  resumed = run("b", 4)
  assert resumed.buffer.data.sharding.spec == jax.sharding.PartitionSpec("data")
  chex.assert_trees_all_close(straight.params, resumed.params, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(straight.buffer.data), np.asarray(resumed.buffer.data))

  common = dict(workdirs=f"{tmp_path / 'a'},{tmp_path / 'b'}", num=8, rounds=2, langevin_steps=3)
  x1 = ebm_sample.run(ebm_sample.Config(devices=1, out=str(tmp_path / "1.png"), **common))
  x4 = ebm_sample.run(ebm_sample.Config(devices=4, out=str(tmp_path / "4.png"), **common))
  np.testing.assert_allclose(x1, x4, rtol=1e-4, atol=1e-4)
  assert not np.allclose(x1[:8], x1[8:])   # each model's chains start elsewhere and draw their own noise


def test_two_processes_of_two_devices_equal_one_device(raw, ebm_one, tmp_path):
  """Multi-host as README describes it, on this machine: 2 processes x 2 CPU devices (gloo collectives) through
  jax.distributed, against 1 process on 1 device (ebm_one): same final state, files written once, for the EBM
  (replicated params and optimizer, the buffer sharded; grids and FID from it)."""
  import orbax.checkpoint as ocp

  from train import ebm_sample
  base = child_env(JAXTRICKS_OFFLINE="1")
  base.pop("JAXTRICKS_DATA", None)
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  args = ["-m", "train.ebm", "--data-dir", str(raw / "raw"), "--steps", "4", *EBM_ARGS, "--workdir", str(tmp_path / "2x2")]
  procs = [subprocess.Popen([sys.executable, *args], cwd=REPO,
                            env=dict(base, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                                     JAX_PROCESS_ID=str(i), TFDS_DATA_DIR=str(tmp_path / f"tfds{i}"),
                                     XLA_FLAGS=f"--xla_force_host_platform_device_count=2 {TEST_XLA_LEVEL}",
                                     JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], "\n".join(o[:3000] for o in outs)
  one_workdir = ebm_one[0]
  path = lambda w: w / "checkpoints" / "4" / "default"
  reference = ocp.StandardCheckpointer().restore(path(one_workdir).absolute())
  on_one_device = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=jax.sharding.
                                                              SingleDeviceSharding(jax.devices()[0])), reference)
  sharded = ocp.StandardCheckpointer().restore(path(tmp_path / "2x2").absolute(), on_one_device)
  chex.assert_trees_all_close(sharded, reference, rtol=1e-4, atol=1e-4)
  # a checkpoint saved from 4 devices in 2 processes loads in this process (4 devices: onto its default device)
  _, state = ebm_sample.load_model(tmp_path / "2x2")
  np.testing.assert_array_equal(np.asarray(state["buffer"]["data"]), np.asarray(sharded["state"]["buffer"]["data"]))
  lines = (tmp_path / "2x2" / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == len((one_workdir / "metrics.jsonl").read_text().splitlines())   # one writer


def test_batch_not_divisible_by_devices_is_a_usage_error(raw, tmp_path):
  rc = cli.main(classify.Config, classify.run, ["--data-dir", str(raw / "raw"), "--batch-size", "30",
                                                "--workdir", str(tmp_path / "w"), "--steps", "1"])
  assert rc == cli.EXIT_USAGE
  assert not (tmp_path / "w").exists()     # refused before anything was written
