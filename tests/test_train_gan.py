"""train.gan end to end on a tiny fake data set: samples, FID (with its sample count, KID, precision/recall,
density/coverage) in metrics.jsonl, a resumed run equal to an uninterrupted one, the EMA of G, bad input."""

import typing

import chex
import jax
import numpy as np
import pytest
from conftest import make_raw_folder
from PIL import Image

from jaxtricks import checkpoints, cli, gan, images, loop
from train import gan as train_gan


# (single-subtract runs the same trainer as single, with single's state: tests/test_gan.py checks its step)
@pytest.mark.parametrize("mode", ["single", "alternating"])
def test_tiny_run_writes_samples_fid_and_resumes(tmp_path, monkeypatch, mode):
  make_raw_folder(tmp_path / "raw")
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  args = ["--mode", mode, "--data-dir", str(tmp_path / "raw"), "--workdir", str(tmp_path / "run"), "--width", "4",
          "--z-dim", "8", "--batch-size", "16", "--sample-every", "3", "--fid-every", "3", "--fid-samples", "64",
          "--checkpoint-every", "3", "--no-progress"]
  assert cli.main(train_gan.Config, train_gan.run, argv=args + ["--steps", "3"]) == 0
  assert cli.main(train_gan.Config, train_gan.run, argv=args + ["--steps", "6"]) == 0   # resumes at 3
  straight = [a if a != str(tmp_path / "run") else str(tmp_path / "straight") for a in args]
  assert cli.main(train_gan.Config, train_gan.run, argv=straight + ["--steps", "6"]) == 0
  resumed, _, _ = checkpoints.restore(tmp_path / "run")
  uninterrupted, _, _ = checkpoints.restore(tmp_path / "straight")
  chex.assert_trees_all_close(resumed, uninterrupted, rtol=1e-6, atol=1e-6)   # params, BN stats, optimizers
  before, _, _ = checkpoints.restore(tmp_path / "run", step=3)
  assert not np.allclose(jax.tree.leaves(before["params"])[0], jax.tree.leaves(resumed["params"])[0])
  assert (tmp_path / "run" / "samples_000003.png").exists() and (tmp_path / "run" / "samples_000006.png").exists()
  lines = loop.read_metrics(tmp_path / "run")
  fids = [l for l in lines if "fid_fmnist" in l]
  assert [l["step"] for l in fids] == [3, 6] and all(l["fid_fmnist"] > 0 for l in fids)
  # beside each FID, from the same features: its sample count, KID, precision/recall, density/coverage
  for l in fids:
    assert l["fid_fmnist_samples"] == 64 and np.isfinite(l["kid_fmnist"]) and l["kid_fmnist_std"] >= 0
    assert all(0 <= l[f"{m}_fmnist"] <= 1 for m in ("precision", "recall", "coverage")) and l["density_fmnist"] >= 0
  assert [l["step"] for l in lines if "d_loss" in l] == list(range(1, 7))


def test_bad_flags(capsys):
  assert cli.main(train_gan.Config, train_gan.run, argv=["--lam", "0"]) == cli.EXIT_USAGE
  assert "--lam must be positive" in capsys.readouterr().err
  assert cli.main(train_gan.Config, train_gan.run, argv=["--mode", "both"]) == cli.EXIT_USAGE


def test_the_modes_are_named_once():
  """--mode's choices are jaxtricks.gan.Mode's names, and gan.train_step takes the same names (no mapping)."""
  assert typing.get_type_hints(train_gan.Config)["mode"] == gan.Mode
  assert typing.get_type_hints(gan.train_step)["mode"] == gan.Mode
  choices = next(a.choices for a in cli.parser(train_gan.Config)._actions if a.dest == "mode")
  assert tuple(choices) == typing.get_args(gan.Mode) == ("single", "single-freeze", "single-subtract", "alternating")


def test_ema_of_the_generator(tmp_path, monkeypatch):
  """--ema-decay keeps an EMA of G's params in the (checkpointed) state and logs FID of G and of its EMA; the EMA
  follows ema <- d * ema + (1 - d) * G after every step."""
  make_raw_folder(tmp_path / "raw")
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  args = ["--data-dir", str(tmp_path / "raw"), "--width", "4", "--z-dim", "8", "--batch-size", "16", "--fid-every",
          "1", "--fid-samples", "64", "--sample-every", "10", "--checkpoint-every", "1", "--no-progress",
          "--no-tensorboard", "--ema-decay", "0.5", "--workdir", str(tmp_path / "w")]
  assert cli.main(train_gan.Config, train_gan.run, argv=args + ["--steps", "2"]) == 0
  s1, s2 = (checkpoints.restore(tmp_path / "w", step=s)[0] for s in (1, 2))
  want = jax.tree.map(lambda e, g: 0.5 * e + 0.5 * g, s1["ema_g"], s2["params"]["G"])
  chex.assert_trees_all_close(s2["ema_g"], want, rtol=1e-5, atol=1e-7)
  assert not np.allclose(jax.tree.leaves(s2["ema_g"])[0], jax.tree.leaves(s2["params"]["G"])[0])
  rows = loop.read_metrics(tmp_path / "w")
  assert [r["step"] for r in rows if "fid_fmnist_ema" in r] == [1, 2]
  assert all("fid_fmnist" in r for r in rows if "fid_fmnist_ema" in r)
  assert all(r["fid_fmnist_ema_samples"] == 64 and "kid_fmnist_ema" in r and "recall_fmnist_ema" in r
             for r in rows if "fid_fmnist_ema" in r)


def test_export_writes_the_ema_generators_samples_and_the_test_split(tmp_path, monkeypatch, capsys):
  """--export-samples 5 --export-real: samples/ holds 5 RGB PNGs, the EMA generator's samples (not G's), real/ the
  64 test images, each grey image as three equal channels; a second export into the same folder is refused
  before any training, in one line."""
  raw = make_raw_folder(tmp_path / "raw")
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  args = ["--data-dir", str(tmp_path / "raw"), "--width", "4", "--z-dim", "8", "--batch-size", "16", "--steps", "2",
          "--fid-samples", "16", "--ema-decay", "0.5", "--no-progress", "--no-tensorboard",
          "--workdir", str(tmp_path / "w"), "--export-samples", "5", "--export-real", "--export-dir",
          str(tmp_path / "exp")]
  config = cli.parse(train_gan.Config, args)
  state = train_gan.run(config)
  read = lambda folder: np.stack([np.asarray(Image.open(p)) for p in sorted(folder.iterdir())])
  samples, real = read(tmp_path / "exp" / "samples"), read(tmp_path / "exp" / "real")
  assert samples.shape == (5, 28, 28, 3) and samples.dtype == np.uint8
  np.testing.assert_array_equal(real, np.repeat(raw["test_images"][..., None], 3, -1))
  generator, _ = train_gan.nets(config)
  key = jax.random.fold_in(jax.random.split(jax.random.PRNGKey(0), 4)[3], 1)   # harness.keys' "sample", folded
  for ema, same in ((True, True), (False, False)):
    want = images.to_uint8_rgb(train_gan.draw(generator, state, key, 5, 8, ema))
    assert np.array_equal(samples, want) == same
  capsys.readouterr()
  assert cli.main(train_gan.Config, train_gan.run, argv=args) == cli.EXIT_USAGE
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "--export-dir" in err[0] and "samples is there already" in err[0], err
