"""train.gan end to end on a tiny fake data set: samples, FID in metrics.jsonl, resume, bad input."""

import pytest

from conftest import make_raw_folder
from jaxtricks import cli, loop
from train import gan as train_gan


@pytest.mark.parametrize("mode", ["single", "single-subtract", "alternating"])
def test_tiny_run_writes_samples_fid_and_resumes(tmp_path, monkeypatch, mode):
  make_raw_folder(tmp_path / "raw")
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  args = ["--mode", mode, "--data-dir", str(tmp_path / "raw"), "--workdir", str(tmp_path / "run"), "--width", "4",
          "--z-dim", "8", "--batch-size", "16", "--sample-every", "3", "--fid-every", "3", "--fid-samples", "64",
          "--checkpoint-every", "3", "--no-progress"]
  assert cli.main(train_gan.Config, train_gan.run, argv=args + ["--steps", "3"]) == 0
  assert cli.main(train_gan.Config, train_gan.run, argv=args + ["--steps", "6"]) == 0
  assert (tmp_path / "run" / "samples_000003.png").exists() and (tmp_path / "run" / "samples_000006.png").exists()
  lines = loop.read_metrics(tmp_path / "run")
  fids = [l for l in lines if "fid_fmnist" in l]
  assert [l["step"] for l in fids] == [3, 6] and all(l["fid_fmnist"] > 0 for l in fids)
  assert [l["step"] for l in lines if "d_loss" in l] == list(range(1, 7))


def test_bad_flags(capsys):
  assert cli.main(train_gan.Config, train_gan.run, argv=["--lam", "0"]) == cli.EXIT_USAGE
  assert "--lam must be positive" in capsys.readouterr().err
  assert cli.main(train_gan.Config, train_gan.run, argv=["--mode", "both"]) == cli.EXIT_USAGE
