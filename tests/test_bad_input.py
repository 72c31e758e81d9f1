"""docs/reliability.md's table of bad inputs, row by row: each gives one line on stderr and exit code 2, and nothing already
saved is lost. The first column of every row here must appear in that table (last test)."""

import errno
import importlib
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import REPO, child_env, error_lines, make_raw_folder, without_progress_bars

from jaxtricks import checkpoints, cli, harness, losses
from jaxtricks.errors import DataError
from train import classify, sentiment
from train import ebm as train_ebm
from train import gan as train_gan

TRAINERS = {"classify": classify, "gan": train_gan, "ebm": train_ebm, "sentiment": sentiment}


def _truncate(path):
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# (README's words for the input, trainer, its flags ({raw} = a fake data folder, {tmp} = the test's folder),
#  a setup step, what stderr must say)
ROWS = [
    ("`--steps -5`", "classify", ["--steps", "-5"], None, "--steps must be positive (or left out: from --epochs)"),
    ("`--steps 0`", "gan", ["--steps", "0"], None, "--steps must be positive, got 0"),
    ("`--model resnet`", "classify", ["--model", "resnet"], None, "invalid choice: 'resnet'"),
    ("`--loss focal`", "sentiment", ["--loss", "focal"], None, "invalid choice: 'focal'"),
    ("`--dataset cifar100`", "gan", ["--dataset", "cifar100"], None, "invalid choice: 'cifar100'"),
    ("`--margin 1.5` (sentiment)", "sentiment", ["--loss", "margin", "--margin", "1.5"], None,
     "--margin must be in (0.5, 1), got 1.5"),
    ("`--margin 0.5` (sentiment)", "sentiment", ["--loss", "margin", "--margin", "0.5"], None,
     "--margin must be in (0.5, 1), got 0.5"),
    ("`--batch-size 0`", "ebm", ["--batch-size", "0"], None, "--batch-size must be positive"),
    ("`--data-dir` that does not exist", "classify", ["--data-dir", "{tmp}/nowhere"], None,
     "--data-dir {tmp}/nowhere: no such folder"),
    ("truncated `.gz` in the data folder", "classify", ["--data-dir", "{raw}"],
     lambda tmp: _truncate(tmp / "raw" / "fashion_mnist" / "train-images-idx3-ubyte.gz"),
     "train-images-idx3-ubyte.gz: truncated or corrupted"),
    ("32×32 images in a custom data folder", "gan", ["--data-dir", "{tmp}/raw32"],
     lambda tmp: make_raw_folder(tmp / "raw32", image_shape=(32, 32)),
     "train-images-idx3-ubyte.gz: items have shape (32, 32), expected (28, 28)"),
    ("`--eval-only` on a workdir without checkpoints", "classify",
     ["--data-dir", "{raw}", "--eval-only", "--workdir", "{tmp}/untrained"], None,
     "{tmp}/untrained: no checkpoint to evaluate"),
    ("`--workdir` not writable", "classify", ["--data-dir", "{raw}", "--workdir", "{tmp}/file/run"],
     lambda tmp: (tmp / "file").write_text(""), "not writable"),
    ("`--data-dir` naming a file", "classify", ["--data-dir", "{tmp}/afile"], lambda tmp: (tmp / "afile").write_text(""),
     "--data-dir {tmp}/afile: is a file, not a folder; give the folder that holds fashion_mnist/"),
    ("`--fid-samples 1`", "gan", ["--fid-samples", "1"], None, "--fid-samples must be >= 2 (an FID compares "
     "covariances"),
    ("`--fid-samples 1` (ebm)", "ebm", ["--fid-samples", "1"], None, "--fid-samples must be >= 2"),
    ("`--export-samples 0`", "gan", ["--export-samples", "0"], None,
     "--export-samples must be >= 1 (or left out: no export), got 0"),
    ("`--export-dir` naming a file", "ebm", ["--export-samples", "4", "--export-dir", "{tmp}/afile"],
     lambda tmp: (tmp / "afile").write_text(""),
     "--export-dir {tmp}/afile: {tmp}/afile is a file, not a folder; give a folder for the export"),
    ("`--export-dir` holding an earlier export", "gan", ["--export-samples", "4", "--export-dir", "{tmp}/old"],
     lambda tmp: ((tmp / "old" / "samples").mkdir(parents=True), (tmp / "old" / "samples" / "000000.png").write_text("")),
     "--export-dir {tmp}/old: samples is there already; choose another folder or remove it"),
    ("`--maxlen 2` with `--model cnn` (sentiment)", "sentiment", ["--model", "cnn", "--maxlen", "2"], None,
     "--maxlen 2 is shorter than the CNN's convolution (width 3): nothing of a review would be left to classify; "
     "use --maxlen 3 or more"),
    ("`--margin 0.7` without `--loss margin` (sentiment)", "sentiment", ["--margin", "0.7"], None,
     "--margin 0.7 does nothing with --loss bce (it is the margin loss's threshold); add --loss margin, or leave it "
     "out"),
    ("`--export-samples 600` on the pretrained EBM (its buffer keeps 500)", "ebm",
     ["--eval-only", "--workdir", "{tmp}/ebm_s0", "--export-samples", "600", "--data-dir", "{raw}"],
     lambda tmp: shutil.copytree(REPO / "benchmarks" / "pretrained" / "ebm_s0", tmp / "ebm_s0"),
     "--export-samples 600 exceeds the 500 samples this buffer holds; export at most that many, or chains from noise "
     "(--export-source fresh)"),
    ("training into a pretrained model's folder", "gan", ["--workdir", "{tmp}/gan", "--steps", "1", "--data-dir", "{raw}"],
     lambda tmp: shutil.copytree(REPO / "benchmarks" / "pretrained" / "gan_single_s0", tmp / "gan"),
     "holds a pretrained model"),
    ("a misspelled flag", "gan", ["--fid-smaples", "5000"], None,
     "unrecognized arguments: --fid-smaples 5000; did you mean --fid-samples?"),
    ("`--hinge-margin 5` without `--loss hinge` (classify)", "classify", ["--hinge-margin", "5"], None,
     "--hinge-margin 5.0 does nothing with --loss ce (it acts only with --loss hinge); add --loss hinge, or leave it "
     "out"),
    ("an EXACT setting with another loss (classify)", "classify", ["--loss", "margin", "--exact-margin", "0.5"], None,
     "--exact-margin 0.5 does nothing with --loss margin (it acts only with --loss exact, exact_log_mean or "
     "exact_log); add --loss exact, or leave it out"),
]


@pytest.fixture
def tmp(tmp_path, monkeypatch):
  monkeypatch.delenv("JAXTRICKS_DATA", raising=False)
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  make_raw_folder(tmp_path / "raw", n_train=2000)
  return tmp_path


def _error_line(err: str) -> str:
  """The one error line; TFDS may draw its preparation progress bars above it, but nothing else may print."""
  lines = without_progress_bars(err)
  assert len(lines) == 1 and "Traceback" not in err, err
  return lines[0]


def _main(trainer, args, tmp):
  args = [a.format(raw=tmp / "raw", tmp=tmp) for a in args]
  if "--workdir" not in args:
    args += ["--workdir", str(tmp / "w")]
  return cli.main(TRAINERS[trainer].Config, TRAINERS[trainer].run, argv=args + ["--no-progress"], prog=trainer)


@pytest.mark.parametrize("readme, trainer, args, setup, words", ROWS, ids=[r[0] for r in ROWS])
def test_row(readme, trainer, args, setup, words, tmp, capsys):
  if setup:
    setup(tmp)
  rc = _main(trainer, args, tmp)
  err = capsys.readouterr().err
  assert rc == cli.EXIT_USAGE, err
  line = _error_line(err)
  assert line.startswith(f"{trainer}: error: ") and words.format(tmp=tmp) in line, line


@pytest.mark.parametrize("trainer, args, words", [
    ("ebm", ["--unroll", "fully"], "argument --unroll: expected an integer or one of auto, full, got 'fully'"),
    ("ebm", ["--unroll", "-2"], "--unroll must be auto, full or >= 1, got -2"),
    ("ebm", ["--noise-scale", "sqrt"], "argument --noise-scale: expected a number or one of sqrt_step_size"),
    ("classify", ["--devices", "-1"], "--devices must be all or >= 1, got -1"),
    ("gan", ["--cpu-devices", "many"], "argument --cpu-devices: expected an integer or one of per_core, got 'many'"),
])
def test_a_number_or_word_flag_refuses_anything_else_in_one_line(trainer, args, words, tmp, capsys):
  assert _main(trainer, args, tmp) == cli.EXIT_USAGE
  line = _error_line(capsys.readouterr().err)
  assert line.startswith(f"{trainer}: error: ") and words in line, line


def test_an_old_spelling_is_one_warning_line_then_the_new_value(tmp, capsys):
  """`--devices 0` (the old "all") still runs, with one line naming the new spelling; then the usual error of
  the next bad value shows it was read as `all`."""
  assert _main("classify", ["--devices", "0", "--batch-size", "0"], tmp) == cli.EXIT_USAGE
  lines = without_progress_bars(capsys.readouterr().err)
  assert lines == ["classify: warning: --devices 0 is deprecated: use --devices all (the old spelling goes in the "
                   "next release)", "classify: error: --batch-size must be positive, got 0"], lines


@pytest.mark.parametrize("program", sorted(p.stem for p in (REPO / "train").glob("*.py") if p.stem != "__init__"))
def test_help_of_every_program_exits_0(program, capsys):
  """--help prints every flag's help (argparse %-formats it: a "20%" once ended train.classify's in a ValueError)."""
  module = importlib.import_module(f"train.{program}")
  with pytest.raises(SystemExit) as exit_:
    module.main(["--help"])
  out = capsys.readouterr().out
  assert exit_.value.code == 0 and out.startswith("usage: python -m train.") and "--help" in out, out[-500:]
  if program == "classify":
    assert "shifts of up to 20% (the EXACT" in " ".join(out.split())   # the percent sign as written


def test_row_batch_not_divisible_by_devices(tmp):
  """`--batch-size 30` on 4 devices (4 fake CPU devices in a process of its own; on the CPU also where a GPU is)."""
  env = child_env(XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-m", "train.classify", "--data-dir", str(tmp / "raw"), "--batch-size", "30",
                      "--workdir", str(tmp / "w")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 2 and error_lines(r.stderr) == [
      "python -m train.classify: error: --batch-size 30 does not divide by the 4 devices; use a multiple of 4 "
      "(or --devices)"], r.stderr
  assert not (tmp / "w").exists()


def test_row_workdir_of_another_model(tmp, capsys):
  """A GAN pointed at a classifier's workdir refuses before touching it."""
  assert _main("classify", ["--data-dir", "{raw}", "--steps", "3"], tmp) == 0
  capsys.readouterr()
  rc = _main("gan", ["--data-dir", "{raw}", "--steps", "3"], tmp)
  err = capsys.readouterr().err
  assert rc == cli.EXIT_USAGE and "holds a run of another configuration" in _error_line(err), err
  assert checkpoints.manager(tmp / "w").latest_step() == 3


def test_row_disk_full_while_saving(tmp, capsys, monkeypatch):
  """ENOSPC from the checkpoint save at step 20 (simulated): exit 2, step 10 kept, a rerun resumes from it."""
  args = ["--data-dir", "{raw}", "--steps", "30", "--checkpoint-every", "10", "--batch-size", "16"]
  save = ocp.CheckpointManager.save

  def full_disk(self, step, *a, **k):
    if step == 20:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return save(self, step, *a, **k)

  monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
  rc = _main("classify", args, tmp)
  err = _error_line(capsys.readouterr().err)
  assert rc == cli.EXIT_USAGE
  assert "writing failed at step 20 (No space left on device); last complete checkpoint: step 10" in err, err
  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  assert checkpoints.manager(tmp / "w").latest_step() == 10
  assert _main("classify", args, tmp) == 0
  assert checkpoints.manager(tmp / "w").latest_step() == 30


@pytest.mark.parametrize("label", [-1, 10])
def test_row_label_outside_the_classes(label, tmp, capsys, monkeypatch):
  """A label -1 (scored as the last class) or 10 (a NaN loss) in the training data: the first step runs the
  library's checks (harness.checked_first_step) and the run stops with one line."""
  load = harness.load_images

  def with_a_bad_label(dataset, config):
    train, test = load(dataset, config)
    labels = train["label"].astype(np.int32)
    labels[::7] = label
    return {**train, "label": labels}, test
  monkeypatch.setattr(harness, "load_images", with_a_bad_label)
  rc = _main("classify", ["--data-dir", "{raw}", "--steps", "3", "--batch-size", "16"], tmp)
  line = _error_line(capsys.readouterr().err)
  assert rc == cli.EXIT_USAGE and line.startswith("classify: error: the first training batch fails a check "
                                                  "(objective: labels must be in [0, 10), got values from"), line
  assert line.endswith("fix the training data (the --data-dir folder)"), line
  assert list((tmp / "w").iterdir()) == []   # nothing written before the first step succeeds: not bound to it
  monkeypatch.setattr(harness, "load_images", load)   # the data fixed, and other settings: the same workdir trains
  assert _main("classify", ["--data-dir", "{raw}", "--steps", "2", "--batch-size", "8"], tmp) == 0
  assert checkpoints.steps(tmp / "w") == [2] and json.loads((tmp / "w" / "config.json").read_text())["batch_size"] == 8


def test_checked_first_step_runs_the_checks_once_and_trains_with_the_plain_step():
  """Only the first call is checked (a separate program returning the error alone); every call trains with the
  jitted step itself, so the numbers are the unchecked step's, bit for bit."""
  def step(state, batch, key):
    losses.check_in_range("step", "labels", batch, 0, 3)
    return state + batch.sum(), {"loss": state}
  calls = []
  jitted = jax.jit(step)

  def counted(*args):
    calls.append(args)
    return jitted(*args)
  checked = harness.checked_first_step(step, counted)
  good, bad = jnp.array([0, 2]), jnp.array([0, 3])
  assert checked(jnp.float32(1), good, None)[0] == jitted(jnp.float32(1), good, None)[0]
  assert checked(jnp.float32(1), bad, None)[0] == 4.0   # not checked after the first call
  assert len(calls) == 2
  with pytest.raises(DataError, match=r"fails a check \(step: labels must be in \[0, 3\), got values from 0 to 3\)"):
    harness.checked_first_step(step, counted)(jnp.float32(1), bad, None)
  assert len(calls) == 2   # the plain step never ran on the bad batch


def test_docs_list_every_row():
  doc = (REPO / "docs" / "reliability.md").read_text()
  table = doc[doc.index("## Bad input"):doc.index("## Reliability")]
  for words in [r[0] for r in ROWS] + ["`--batch-size 30` on 4 devices", "workdir of another model",
                                       "disk full while saving", "a label outside the classes in the training data"]:
    assert words in table, f"docs/reliability.md's bad-input table lacks {words!r}"
  code = "".join(p.read_text() for d in ("jaxtricks", "train", "benchmarks") for p in (REPO / d).rglob("*.py"))
  assert not re.search(r"\bimport pickle|\bpickle\.load|allow_pickle=True", code)   # nothing unpickles from disk


def test_error_lines_drops_xla_log_lines_only():
  """On a GPU, XLA's autotuner may log to the same stderr; the one-line contract is about the program's lines."""
  stderr = ("W1126 02:21:32.900814   18529 cuda_timer.cc:88] Delay kernel timed out: measured time has sub-optimal "
            "accuracy.\npython -m train.classify: training diverged at step 22\nWarning: W1126 is not a log line\n")
  assert error_lines(stderr) == ["python -m train.classify: training diverged at step 22",
                                 "Warning: W1126 is not a log line"]


def test_every_benchmark_command_line_gives_one_line_on_bad_input(capsys):
  """benchmarks.common.ArgumentParser, which every benchmark, study and tool parses with (none builds argparse's
  own): a usage error is one line naming the option, exit 2; --help shows each option's default."""
  import re

  from benchmarks.common import ArgumentParser
  raw = [str(p.relative_to(REPO)) for p in (REPO / "benchmarks").rglob("*.py")
         if p.name != "common.py" and re.search(r"argparse\.ArgumentParser\(", p.read_text())]
  assert not raw, f"parse with benchmarks.common.ArgumentParser: {raw}"
  p = ArgumentParser(prog="python -m benchmarks.x")
  p.add_argument("--repeats", type=int, default=20)
  p.add_argument("--json", default="", help="where the table goes (default nowhere)")
  with pytest.raises(SystemExit) as stop:
    p.parse_args(["--repeats", "many"])
  err = capsys.readouterr().err
  assert stop.value.code == 2 and err.strip().splitlines() == [
      "python -m benchmarks.x: error: argument --repeats: invalid int value: 'many'"], err
  text = p.format_help()
  assert "(default: 20)" in text and "(default nowhere)" in text and "(default: )" not in text
