"""`--dataset cifar10` (32x32x3) in every image trainer: a tiny fixture archive, a few steps, the model sized for
it (the state's first layer sees 3 channels) and its outputs written (grids for the GAN and the EBM)."""

import json

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import EBM_PLAIN, make_cifar_folder

from jaxtricks import checkpoints, cli, loop, metrics
from jaxtricks.models.feature_net import FeatureNet
from train import classify
from train import ebm as train_ebm
from train import gan as train_gan

ARGS = {
    "classify": (classify, ["--batch-size", "8", "--eval-batch-size", "16"]),
    "gan": (train_gan, ["--batch-size", "8", "--width", "4", "--z-dim", "8", "--sample-every", "2"]),
    "ebm": (train_ebm, ["--batch-size", "8", "--channels", "4", "--langevin-steps", "2", "--fresh-steps", "2",
                        "--buffer-size", "16", "--unroll", "1", "--sample-every", "2", "--fid-every", "2",
                        "--fid-samples", "32", *EBM_PLAIN]),
}


@pytest.mark.parametrize("program", list(ARGS))
def test_trainer_runs_on_cifar10(program, tmp_path, monkeypatch):
  make_cifar_folder(tmp_path / "raw", "binary", n_train=40, n_test=20)
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  # FID-CIFAR10's feature net: weights of a freshly initialized net here, whatever jaxtricks/assets/ holds
  weights = tmp_path / "feature_net_cifar10.msgpack"
  weights.write_bytes(flax.serialization.to_bytes(
      FeatureNet().init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]))
  monkeypatch.setitem(metrics.FEATURE_NETS, "cifar10", (weights, (32, 32, 3)))
  module, extra = ARGS[program]
  argv = ["--dataset", "cifar10", "--data-dir", str(tmp_path / "raw"), "--workdir", str(tmp_path / "w"),
          "--steps", "2", "--checkpoint-every", "2", "--no-progress", "--no-tensorboard", *extra]
  assert cli.main(module.Config, module.run, argv=argv) == 0
  state, _, step = checkpoints.restore(tmp_path / "w")
  assert step == 2
  kernels = [np.shape(v) for path, v in _leaves(state["params"]) if path.endswith("kernel")]
  # a conv that reads the 3 colour channels (the EBM's strided net reads them as 2x2 patches: 4 x 3)
  assert any(len(s) == 4 and s[2] in (3, 12) for s in kernels), kernels
  if program == "ebm":
    assert kernels[0] == (2, 2, 12, 4), kernels          # its first layer: 2x2 patches of 3 channels
  rows = loop.read_metrics(tmp_path / "w")
  assert [r["step"] for r in rows if "loss" in r] == [1, 2]
  if program == "classify":
    assert any("test/accuracy" in r for r in rows)
  else:
    fids = {k for r in rows for k in r if k.startswith("fid")}
    # both score their samples by FID-CIFAR10 (never by FID-FMNIST, whose net is Fashion-MNIST's): metrics.fid_name
    names = {"fid_cifar10"} if program == "gan" else {"fid_cifar10_buffer", "fid_cifar10_fresh"}
    assert fids == names | {f"{name}_samples" for name in names}, fids     # each FID with its sample count
    grids = sorted(p.name for p in (tmp_path / "w").glob("*_000002.png"))
    assert grids == (["samples_000002.png"] if program == "gan" else ["buffer_000002.png", "fresh_000002.png"])


def _leaves(tree, prefix=""):
  if isinstance(tree, dict):
    for k, v in tree.items():
      yield from _leaves(v, f"{prefix}/{k}")
  else:
    yield prefix, tree


def test_feature_net_for_fid_cifar10_trains_exports_and_loads(tmp_path, monkeypatch, capsys):
  """train.feature_net --dataset cifar10 runs its recipe through train.classify (a child process), writes the
  weights only when the test accuracy reaches --min-accuracy, and metrics.load_feature_net reads them back for
  32x32x3 images."""
  from train import feature_net
  make_cifar_folder(tmp_path / "raw", "binary", n_train=260, n_test=20)     # 2 steps of the recipe's batch 128
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  out = tmp_path / "net.msgpack"
  argv = ["--dataset", "cifar10", "--data-dir", str(tmp_path / "raw"), "--workdir", str(tmp_path / "w"),
          "--output", str(out), "--epochs", "1"]
  assert feature_net.main(argv + ["--min-accuracy", "1"]) == cli.EXIT_USAGE   # 2 steps: not all 20 test images right
  assert "the feature net reached" in capsys.readouterr().err and not out.exists()
  assert feature_net.main(argv + ["--min-accuracy", "0"]) == 0                  # resumes the finished run
  info = json.loads(out.with_suffix(".json").read_text())
  assert 0 <= info["test_accuracy"] <= 1 and info["recipe"]["dataset"] == "cifar10"
  net = metrics.load_feature_net(out, fid="cifar10")
  feats, probs = metrics.feature_net_outputs(np.zeros((5, 32, 32, 3), np.uint8), net=net)
  assert feats.shape == (5, 128) and probs.shape == (5, 10)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
