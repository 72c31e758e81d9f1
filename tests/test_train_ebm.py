"""train.ebm and train.ebm_sample end to end: tiny fake data, PNGs, FID lines, sampling, divergence, bad input,
and 3 steps on the real data."""

import os
import subprocess
import sys

import chex
import numpy as np
import pytest
from conftest import EBM_PLAIN, REPO, child_env, make_raw_folder, require_real_data
from PIL import Image

from jaxtricks import checkpoints, cli, ebm, images, loop
from train import ebm as train_ebm
from train import ebm_sample

# the chain as a lax.scan (--unroll 1): 3-6x quicker to compile than the CPU default (unrolled), which computes the
# same chain (tests/test_langevin.py::test_trace_and_unroll)
TINY = ["--channels", "4", "--langevin-steps", "3", "--fresh-steps", "3", "--batch-size", "16", "--unroll", "1",
        "--buffer-size", "64", "--fid-samples", "32", "--no-progress", *EBM_PLAIN]


def _env(tmp_path):
  env = child_env(TFDS_DATA_DIR=str(tmp_path / "tfds"), JAXTRICKS_OFFLINE="1")
  env.pop("JAXTRICKS_DATA", None)
  return env


def _ebm(tmp_path, *args, killer=None):
  cmd = [sys.executable] + (["tests/killed_run.py", "ebm", str(killer)] if killer else ["-m", "train.ebm"])
  base = ["--data-dir", str(tmp_path / "raw"), "--checkpoint-every", "4", "--sample-every", "6", "--fid-every", "6"]
  return subprocess.run(cmd + base + TINY + list(args), cwd=REPO, env=_env(tmp_path), capture_output=True,
                        text=True, timeout=600)


def _checkpoint(workdir, step):
  """The checkpoint as saved, on this process's one device whatever devices the run split itself over (the
  EBM makes the CPU one device per core by default)."""
  state, key, _ = checkpoints.restore(workdir, step=step)
  return {"state": state, "key": key}


def test_tiny_run_writes_pngs_fid_and_samples(tmp_path):
  """12 steps: grids and FID lines at 6 and 12, every step logged, the buffer filled and moving; then sampling from it, alone and as an ensemble sharing one buffer. (Killing and
  resuming the EBM, at a random step and during a save, is tests/test_faults.py's.)"""
  raw = make_raw_folder(tmp_path / "raw")
  straight = _ebm(tmp_path, "--steps", "12", "--workdir", str(tmp_path / "a"), "--export-samples", "10",
                  "--export-format", "npz", "--export-real", "--export-dir", str(tmp_path / "exp"))
  assert straight.returncode == 0, straight.stderr[-2000:]
  a = _checkpoint(tmp_path / "a", 12)
  assert int(a["state"]["buffer"]["count"]) == 64                           # 12 steps x 16 fakes, capacity 64
  # the export (--export-source buffer): the 10 latest buffer items, newest first, grey as three equal channels
  buffer = a["state"]["buffer"]
  newest = buffer["data"][(int(buffer["pointer"]) - 1 - np.arange(10)) % 64]
  with np.load(tmp_path / "exp" / "samples.npz") as f:
    assert f.files == ["arr_0"] and f["arr_0"].dtype == np.uint8
    np.testing.assert_array_equal(f["arr_0"], np.repeat(newest, 3, -1))
  with np.load(tmp_path / "exp" / "real.npz") as f:
    np.testing.assert_array_equal(f["arr_0"], np.repeat(raw["test_images"][..., None], 3, -1))
  assert not np.array_equal(a["state"]["buffer"]["data"], _checkpoint(tmp_path / "a", 8)["state"]["buffer"]["data"])
  files = set(os.listdir(tmp_path / "a"))
  assert {"buffer_000006.png", "fresh_000006.png", "buffer_000012.png", "fresh_000012.png"} <= files
  lines = loop.read_metrics(tmp_path / "a")
  fids = [l for l in lines if "fid_fmnist_fresh" in l]
  assert [l["step"] for l in fids] == [6, 12] and all(l["fid_fmnist_buffer"] > 0 for l in fids)
  # beside each FID, from the same features: its sample count, KID, precision/recall, density/coverage
  for l, kind in ((l, kind) for l in fids for kind in ("buffer", "fresh")):
    assert l[f"fid_fmnist_{kind}_samples"] == 32 and np.isfinite(l[f"kid_fmnist_{kind}"])
    assert all(0 <= l[f"{m}_fmnist_{kind}"] <= 1 for m in ("precision", "recall", "coverage"))
  assert [l["step"] for l in lines if "energy_real" in l] == list(range(1, 13))

  # sampling afterwards: an ensemble (here the model twice) sharing one buffer
  out = tmp_path / "ens.png"
  args = ["--workdirs", f"{tmp_path / 'a'},{tmp_path / 'a'}", "--num", "4", "--rounds", "2",
          "--langevin-steps", "3", "--out", str(out), "--out-npy", str(tmp_path / "ens.npy"), "--export-samples", "6",
          "--export-dir", str(tmp_path / "sexp")]
  assert cli.main(ebm_sample.Config, ebm_sample.run, argv=args) == 0
  x = np.load(tmp_path / "ens.npy")
  chex.assert_shape(x, (8, 28, 28, 1))
  assert out.exists() and x.min() >= 0 and x.max() <= 1
  # the export: 6 RGB PNGs, each one of the last round's samples (the newest in the shared buffer)
  files = sorted((tmp_path / "sexp" / "samples").iterdir())
  assert [p.name for p in files] == [f"{i:06d}.png" for i in range(6)]
  last_round = images.to_uint8_rgb(x)
  for p in files:
    img = np.asarray(Image.open(p))
    assert img.shape == (28, 28, 3) and img.dtype == np.uint8
    assert any(np.array_equal(img, s) for s in last_round)


def test_divergence_gives_advice_and_keeps_checkpoint(tmp_path, capsys, monkeypatch):
  make_raw_folder(tmp_path / "raw")
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  common = ["--data-dir", str(tmp_path / "raw"), "--workdir", str(tmp_path / "w"), "--checkpoint-every", "4"] + TINY
  assert cli.main(train_ebm.Config, train_ebm.run, argv=common + ["--steps", "4"]) == 0
  capsys.readouterr()
  rc = cli.main(train_ebm.Config, train_ebm.run, argv=common + ["--steps", "8", "--lr", "1e12", "--reg", "0"])
  err = capsys.readouterr().err
  assert rc == cli.EXIT_DIVERGED and len(err.strip().splitlines()) == 1, err
  assert "last good checkpoint: step 4" in err and "--langevin-steps" in err and "--reg" in err
  assert sorted(os.listdir(tmp_path / "w" / "checkpoints")) == ["4"]


@pytest.mark.parametrize("args, words", [
    (["--steps", "0"], "--steps must be positive"),
    (["--reinit-prob", "1.5"], "--reinit-prob must be in [0, 1]"),
    (["--buffer-size", "8"], "--buffer-size 8 must hold at least one batch"),
    (["--buffer-dtype", "float16"], "invalid choice: 'float16'"),
    (["--dataset", "mnist", "--data-dir", "/nonexistent"], "--data-dir /nonexistent: no such folder"),
    (["--export-samples", "-3"], "--export-samples must be >= 1 (or left out: no export), got -3"),
    (["--export-samples", "100", "--steps", "4", "--batch-size", "16"], "--export-samples 100 exceeds the 64 samples "
     "the buffer holds after --steps 4 (at most --buffer-size); export fewer, or fresh chains (--export-source fresh)"),
    (["--export-format", "jpg"], "invalid choice: 'jpg'"),
    (["--net", "resnet", "--conv", "taps"], "--conv is the strided net's setting; the resnet net runs xla only"),
    (["--net", "resnet", "--compute-dtype", "bfloat16"], "--compute-dtype is the strided net's setting"),
])
def test_bad_input_one_line_exit_2(args, words, tmp_path, capsys, monkeypatch):
  monkeypatch.delenv("JAXTRICKS_DATA", raising=False)
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  rc = cli.main(train_ebm.Config, train_ebm.run, argv=args + ["--workdir", str(tmp_path / "w")], prog="train.ebm")
  err = capsys.readouterr().err
  assert rc == cli.EXIT_USAGE and len(err.strip().splitlines()) == 1 and words in err, err


@pytest.mark.parametrize("old, new, sampler", [
    (["--unroll", "-1"], ["--unroll", "auto"], dict(unroll="auto")),
    (["--unroll", "0"], ["--unroll", "full"], dict(unroll="full")),
    (["--noise-scale", "0"], ["--noise-scale", "sqrt_step_size"], dict(noise_scale=None)),
])
def test_old_sampler_spellings_give_the_new_ones_sampler_and_one_deprecation_line(old, new, sampler, capsys):
  """Known answers: each old spelling builds the sampler of its new spelling (train.ebm's default chain with that
  one setting changed); only the old one prints a line, which names the new spelling."""
  base = dict(num_steps=20, step_size=10.0, noise_scale=0.005, grad_clip=0.03, reinit_prob=0.05, unroll="auto",
              augment_shift=2)
  expected = ebm.SamplerConfig(**{**base, **sampler})
  assert train_ebm.sampler(cli.parse(train_ebm.Config, new, prog="train.ebm")) == expected
  assert capsys.readouterr().err == ""
  assert train_ebm.sampler(cli.parse(train_ebm.Config, old, prog="train.ebm")) == expected
  assert capsys.readouterr().err.splitlines() == [
      f"train.ebm: warning: {' '.join(old)} is deprecated: use {' '.join(new)} (the old spelling goes in the next "
      "release)"]


def test_the_default_sampler_unrolls_its_chain_fully_on_the_cpu_and_grad_clip_0_is_no_clip():
  """--unroll auto is lax.scan's unroll=20 on a CPU: the default 20-step chain fully unrolled (as the old -1), longer
  ones in blocks of 20 (tests/test_ebm.py); --grad-clip 0 turns the clip off."""
  config = cli.parse(train_ebm.Config, ["--grad-clip", "0"])
  assert ebm.scan_unroll(train_ebm.sampler(config).unroll) == 20 == config.langevin_steps
  assert train_ebm.sampler(config).grad_clip is None


@pytest.mark.parametrize("args, words", [
    (["--export-samples", "0"], "--export-samples must be >= 1 (or left out: no export), got 0"),
    (["--export-samples", "700"], "--export-samples 700 exceeds the 640 samples the rounds draw (--rounds x --num x 1 "
     "models); raise --rounds or --num"),
    (["--export-samples", "4", "--export-dir", "{tmp}/afile"], "--export-dir {tmp}/afile: {tmp}/afile is a file, not a "
     "folder; give a folder for the export"),
])
def test_sample_export_bad_input_one_line_exit_2(args, words, tmp_path, capsys):
  (tmp_path / "afile").write_text("")
  rc = cli.main(ebm_sample.Config, ebm_sample.run, argv=[a.format(tmp=tmp_path) for a in args])
  err = capsys.readouterr().err
  assert rc == cli.EXIT_USAGE and len(err.strip().splitlines()) == 1 and words.format(tmp=tmp_path) in err, err


def test_sample_refuses_a_workdir_without_a_model(tmp_path, capsys):
  rc = cli.main(ebm_sample.Config, ebm_sample.run, argv=["--workdirs", str(tmp_path / "nothing")])
  err = capsys.readouterr().err
  assert rc == cli.EXIT_USAGE and "no config.json" in err and len(err.strip().splitlines()) == 1


@pytest.mark.realdata
def test_three_steps_on_real_fashion_mnist_write_pngs(tmp_path):
  require_real_data("fashion_mnist")
  env = child_env()
  # the default sampler's settings but 5-step chains, as a lax.scan (--unroll 1: quicker to compile; the unrolled
  # CPU default computes the same chain, tests/test_langevin.py::test_trace_and_unroll): this test is about the
  # real data set going through the trainer, not about the chain
  p = subprocess.run([sys.executable, "-m", "train.ebm", "--steps", "3", "--channels", "4", "--fid-samples", "100",
                      "--langevin-steps", "5", "--fresh-steps", "5", "--unroll", "1", "--workdir", str(tmp_path / "run"),
                      "--no-progress"],
                     cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-2000:]
  assert (tmp_path / "run" / "buffer_000003.png").exists() and (tmp_path / "run" / "fresh_000003.png").exists()
  lines = loop.read_metrics(tmp_path / "run")
  assert [l["step"] for l in lines if "energy_fake" in l] == [1, 2, 3]
  assert all(np.isfinite(l["fid_fmnist_fresh"]) for l in lines if "fid_fmnist_fresh" in l)


def test_bf16_compute_with_the_convolutions_as_dots_trains(tmp_path, monkeypatch):
  """--compute-dtype bfloat16 --conv taps (the default on an AVX-512 BF16 CPU) trains with finite metrics on any
  CPU. That the taps form is XLA's convolution (same parameters, energies and gradients) is test_ebm's
  test_strided_net_with_convolutions_as_dots_is_the_same_function, and how the flags resolve is compute()'s test
  below. (A float32 taps run beside an XLA one, 8 s of the suite, compared their losses: equal whether or not
  --conv reached the net, so it showed neither.)"""
  make_raw_folder(tmp_path / "raw")
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  monkeypatch.delenv("JAXTRICKS_DATA", raising=False)
  argv = ["--data-dir", str(tmp_path / "raw"), *TINY, "--steps", "2", "--fid-every", "2", "--sample-every", "2",
          "--no-tensorboard", "--workdir", str(tmp_path / "bf16"), "--conv", "taps", "--compute-dtype", "bfloat16"]
  assert cli.main(train_ebm.Config, train_ebm.run, argv=argv, prog="train.ebm") == 0
  bf16 = [r for r in loop.read_metrics(tmp_path / "bf16") if "loss" in r]
  assert len(bf16) == 2 and all(np.isfinite([r["loss"], r["grad_norm"]]).all() for r in bf16)


def test_auto_compute_is_bf16_taps_only_where_it_was_measured_faster_and_a_run_trains(monkeypatch):
  """--compute-dtype/--conv auto: bfloat16 with the taps form on a CPU with AVX-512 BF16 (the strided net, training;
  where it was measured), float32 with XLA's convolutions on an AMX host (not measured yet) or without bf16 units,
  for --eval-only and for the residual net; what a flag names wins."""
  from jaxtricks import parallel
  for units, want in (("avx512_bf16", ("bfloat16", "taps")), ("amx", ("float32", "xla")), (None, ("float32", "xla"))):
    monkeypatch.setattr(parallel, "cpu_bf16_units", lambda units=units: units)
    assert train_ebm.compute(train_ebm.Config()) == want
    assert train_ebm.compute(train_ebm.Config(eval_only=True)) == ("float32", "xla")
    assert train_ebm.compute(train_ebm.Config(net="resnet")) == ("float32", "xla")
    assert train_ebm.compute(train_ebm.Config(compute_dtype="float32")) == ("float32", "xla")
    assert train_ebm.compute(train_ebm.Config(compute_dtype="bfloat16", conv="shifted")) == ("bfloat16", "shifted")


def test_cpu_bf16_units_reads_the_x86_flags():
  from jaxtricks import parallel
  line = "processor\t: 0\nflags\t\t: fpu sse2 avx2 {}\nbogomips\t: 1\n"
  assert parallel.cpu_bf16_units(line.format("avx512f avx512_bf16")) == "avx512_bf16"
  assert parallel.cpu_bf16_units(line.format("avx512_bf16 amx_tile amx_bf16")) == "amx"
  assert parallel.cpu_bf16_units(line.format("avx512f avx512_vnni")) is None
  assert parallel.cpu_bf16_units("") is None
