"""What is on disk can be trusted (docs/reliability.md, "Reliability"): each row is one damaged file, one unusable flag or one
signal, on the smallest classifier run that shows it; that table lists every row (last test).
Runs go through cli.main in this process, except the signal rows, which run the program as a child process that
signals its own pid (tests/killed_run.py)."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import chex
import pytest
from conftest import REPO, child_env, error_lines, make_raw_folder, without_progress_bars

from jaxtricks import checkpoints, cli, loop
from train import classify, ebm_sample, feature_net, sentiment
from train import ebm as train_ebm
from train import gan as train_gan

RUN = ["--model", "cnn", "--batch-size", "16", "--checkpoint-every", "2", "--no-progress", "--no-tensorboard"]


@pytest.fixture
def tmp(tmp_path, monkeypatch):
  monkeypatch.delenv("JAXTRICKS_DATA", raising=False)
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  make_raw_folder(tmp_path / "raw")
  return tmp_path


def _classify(tmp, *args, workdir=None):
  argv = ["--data-dir", str(tmp / "raw"), "--workdir", str(workdir or tmp / "w"), *RUN, *args]
  return cli.main(classify.Config, classify.run, argv=argv, prog="classify")


def _one_line(capsys) -> str:
  return _one_line_of(capsys.readouterr().err)


def _one_line_of(err: str) -> str:
  lines = without_progress_bars(err)
  assert len(lines) == 1 and "Traceback" not in err, err
  return lines[0]


def _params(workdir, step):   # on this process's device, whatever devices the run was split over
  return checkpoints.restore(workdir, step=step)[0]


# ---- 1: non-finite values are refused as flags and never saved (the loop refuses a non-finite state at any
# checkpoint: tests/test_loop.py::test_non_finite_state_is_never_saved)

@pytest.mark.parametrize("program, flag", [("ebm", "--lr"), ("ebm", "--step-size"), ("classify", "--lr")])
@pytest.mark.parametrize("value", ["inf", "nan"])
def test_row_non_finite_flag(program, flag, value, tmp, capsys):
  module = {"ebm": train_ebm, "classify": classify}[program]
  rc = cli.main(module.Config, module.run, argv=[flag, value, "--workdir", str(tmp / "w")], prog=program)
  assert rc == cli.EXIT_USAGE
  assert _one_line(capsys) == f"{program}: error: {flag} must be a finite number, got {value}"
  assert not (tmp / "w").exists()


def test_row_lr_inf_through_the_optimizer_saves_nothing_bad(tmp, capsys):
  """--lr 1e38 (finite, but the params overflow): exit 3, and the checkpoint on disk is the last finite one."""
  assert _classify(tmp, "--steps", "2") == 0
  rc = _classify(tmp, "--steps", "6", "--lr", "1e38")
  assert rc == cli.EXIT_DIVERGED and "last good checkpoint: step 2" in _one_line(capsys)
  assert checkpoints.steps(tmp / "w") == [2]
  chex.assert_tree_all_finite(_params(tmp / "w", 2))


# ---- 2: a named data folder is always checked; the cache is keyed by the raw files

def test_row_missing_data_dir_with_a_warm_cache(tmp, capsys):
  assert _classify(tmp, "--steps", "2") == 0   # the cache is warm now
  capsys.readouterr()
  rc = cli.main(classify.Config, classify.run, argv=["--data-dir", "/nonexistent", "--workdir", str(tmp / "w2"), *RUN],
                prog="classify")
  assert rc == cli.EXIT_USAGE and "--data-dir /nonexistent: no such folder" in _one_line(capsys)


def test_row_sentiment_data_dir_without_its_data(tmp, capsys):
  (tmp / "empty").mkdir()
  rc = cli.main(sentiment.Config, sentiment.run, argv=["--data-dir", str(tmp / "empty"), "--workdir", str(tmp / "w"),
                                                       "--no-progress"], prog="sentiment")
  line = _one_line(capsys)
  assert rc == cli.EXIT_USAGE and "imdb: raw files not found" in line and str(tmp / "empty" / "imdb") in line


# ---- 3, 4: damaged checkpoints are named, and the run resumes from the newest intact one

def _truncate_a_data_file(checkpoint):
  """Cuts the largest array-data file of an orbax checkpoint (ocdbt.process_0/d/...) to a third."""
  target = max((p for p in checkpoint.rglob("*") if p.is_file() and p.parent.name == "d"), key=lambda p: p.stat().st_size)
  target.write_bytes(target.read_bytes()[: target.stat().st_size // 3])


@pytest.mark.parametrize("damage", ["truncated data file", "no _METADATA"])
def test_row_damaged_latest_checkpoint(damage, tmp, capsys):
  assert _classify(tmp, "--steps", "6", workdir=tmp / "straight") == 0
  assert _classify(tmp, "--steps", "4") == 0
  latest = tmp / "w" / "checkpoints" / "4"
  if damage == "no _METADATA":
    (latest / "default" / "_METADATA").unlink()
  else:
    _truncate_a_data_file(latest / "default")
  capsys.readouterr()
  assert _classify(tmp, "--steps", "6") == 0
  line = _one_line(capsys)
  assert "checkpoint 4 is damaged" in line and "resuming from step 2" in line, line
  assert (tmp / "w" / "damaged_checkpoints" / "4").is_dir()   # kept, not deleted
  chex.assert_trees_all_close(_params(tmp / "w", 6), _params(tmp / "straight", 6), rtol=1e-6, atol=1e-6)


def test_row_every_checkpoint_damaged(tmp, capsys):
  assert _classify(tmp, "--steps", "2") == 0
  (tmp / "w" / "checkpoints" / "2" / "default" / "_METADATA").unlink()
  capsys.readouterr()
  assert _classify(tmp, "--steps", "4") == cli.EXIT_USAGE
  assert "checkpoint 2 is damaged" in _one_line(capsys)
  assert checkpoints.steps(tmp / "w") == [2]   # left as it was


# ---- 5: a half-written metrics line

def test_row_half_written_metrics_line(tmp, capsys):
  assert _classify(tmp, "--steps", "4") == 0
  with open(tmp / "w" / "metrics.jsonl", "a") as f:
    f.write('{"step": 5, "loss": 0.3')
  capsys.readouterr()
  assert _classify(tmp, "--steps", "6") == 0
  assert "dropped a half-written last line" in _one_line(capsys)
  steps = [r["step"] for r in loop.read_metrics(tmp / "w") if "loss" in r]
  assert steps == list(range(1, 7))


# ---- 6, 7: config.json damaged or removed

def test_row_config_json_not_json(tmp, capsys):
  assert _classify(tmp, "--steps", "2") == 0
  (tmp / "w" / "config.json").write_text("{not json")
  capsys.readouterr()
  assert _classify(tmp, "--steps", "4") == cli.EXIT_USAGE
  assert "config.json: not a readable config" in _one_line(capsys)
  rc = cli.main(ebm_sample.Config, ebm_sample.run, argv=["--workdirs", str(tmp / "w"), "--out", str(tmp / "s.png")])
  assert rc == cli.EXIT_USAGE and "config.json: not a readable config" in _one_line(capsys)


def test_row_config_json_removed_then_other_settings(tmp, capsys):
  assert _classify(tmp, "--steps", "2") == 0
  (tmp / "w" / "config.json").unlink()
  capsys.readouterr()
  assert _classify(tmp, "--steps", "4", "--seed", "7") == cli.EXIT_USAGE
  assert "holds a run of another configuration (seed: 0 there, 7 now)" in _one_line(capsys)
  assert _classify(tmp, "--steps", "4") == 0   # the same settings resume, and config.json comes back
  assert json.loads((tmp / "w" / "config.json").read_text())["seed"] == 0


# ---- 8: one run per workdir

def test_row_two_runs_on_one_workdir(tmp, capsys):
  (tmp / "w").mkdir()
  holder = subprocess.Popen([sys.executable, "-c", "import pathlib, sys, time; from jaxtricks import workdir; "
                             f"lock = workdir.WorkdirLock(pathlib.Path({str(tmp / 'w')!r})); lock.__enter__(); print('held'); "
                             "sys.stdout.flush(); time.sleep(120)"], cwd=REPO, env=child_env(),
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"   # a lock on the empty folder: what a new run's first step holds
    assert _classify(tmp, "--steps", "2") == cli.EXIT_USAGE
    assert f"another run (pid {holder.pid}) is using it" in _one_line(capsys)
    assert list((tmp / "w").iterdir()) == []   # neither run wrote anything there
  finally:
    holder.kill()   # SIGKILL: its lock is now stale
    holder.wait()
  assert _classify(tmp, "--steps", "2") == 0   # taken over
  assert checkpoints.steps(tmp / "w") == [2] and not (tmp / "w" / ".lock").exists()   # the lock is on the folder


# ---- 9, 14: workdirs that are not ours

def test_row_workdir_is_a_folder_of_other_files(tmp, capsys):
  shutil.copytree(REPO / "jaxtricks" / "models", tmp / "src")
  assert _classify(tmp, "--steps", "2", workdir=tmp / "src") == cli.EXIT_USAGE
  line = _one_line(capsys)
  assert "not empty" in line and "not a workdir of a jaxtricks run" in line, line
  assert sorted(p.name for p in (tmp / "src").iterdir()) == sorted(p.name for p in (REPO / "jaxtricks" / "models").iterdir())


def test_row_workdir_is_a_file(tmp, capsys):
  (tmp / "file").write_text("x")
  assert _classify(tmp, "--steps", "2", workdir=tmp / "file") == cli.EXIT_USAGE
  assert _one_line(capsys).endswith(f"--workdir {tmp / 'file'}: is a file, not a directory; choose a directory")
  assert (tmp / "file").read_text() == "x"


# ---- 10, 11: SIGINT

def _signalled(tmp, mode, steps=8, workdir=None):
  """The classifier as a child (tests/killed_run.py with `mode`; None: `python -m train.classify`). A child that
  does not exit within the timeout (a hang) fails the test (subprocess.TimeoutExpired)."""
  env = child_env(TFDS_DATA_DIR=str(tmp / "tfds"), JAXTRICKS_OFFLINE="1")
  env.pop("JAXTRICKS_DATA", None)
  program = ["tests/killed_run.py", "classify", mode] if mode else ["-m", "train.classify"]
  argv = [sys.executable, *program, "--data-dir", str(tmp / "raw"), "--workdir", str(workdir or tmp / "w"), "--steps",
          str(steps), *RUN]
  return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _lines(stderr):
  return error_lines("\n".join(without_progress_bars(stderr)))


def test_row_sigint_mid_run_saves_then_exits_130(tmp):
  """SIGINT after step 2: the step in flight (3) completes, is saved, and the program exits 130."""
  r = _signalled(tmp, "sigint:2")
  assert r.returncode == cli.EXIT_INTERRUPTED, r.stderr[-2000:]
  lines = _lines(r.stderr)
  assert len(lines) == 1 and lines[0].endswith(f"interrupted at step 3; checkpoint saved: step 3 in {tmp / 'w'}. Run "
                                               "the same command again to resume"), r.stderr
  assert checkpoints.steps(tmp / "w") == [2, 3]   # step 3 saved on the way out, though it is not a checkpoint step


def test_row_second_sigint_exits_at_once(tmp):
  r = _signalled(tmp, "sigint2:3")
  assert r.returncode == cli.EXIT_INTERRUPTED and len(_lines(r.stderr)) == 1, r.stderr[-2000:]
  assert "Traceback" not in r.stderr


def test_row_sigint_during_compile(tmp):
  r = _signalled(tmp, "sigint:compile")
  assert r.returncode == cli.EXIT_INTERRUPTED, r.stderr[-2000:]
  lines = _lines(r.stderr)
  assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in r.stderr, r.stderr


# ---- 16, 17: preemption: SIGTERM and SIGHUP as SIGINT (tests/test_faults.py: the resumed run equals an
# uninterrupted one)

@pytest.mark.parametrize("name", ["sigterm", "sighup"])
def test_row_preemption_signal_saves_then_exits(tmp, name):
  """SIGTERM (or SIGHUP) after step 2: step 3 completes, is saved, and the program exits 128 + the signal."""
  r = _signalled(tmp, f"{name}:2")
  assert r.returncode == 128 + getattr(signal, name.upper()), r.stderr[-2000:]
  lines = _lines(r.stderr)
  assert len(lines) == 1 and lines[0].endswith(f"interrupted at step 3; checkpoint saved: step 3 in {tmp / 'w'}. Run "
                                               "the same command again to resume"), r.stderr
  assert checkpoints.steps(tmp / "w") == [2, 3]


def test_row_second_sigterm_exits_at_once(tmp):
  r = _signalled(tmp, "sigterm2:3")
  assert r.returncode == 128 + signal.SIGTERM and len(_lines(r.stderr)) == 1, r.stderr[-2000:]
  assert "stopped at once by a second SIGTERM" in r.stderr and "Traceback" not in r.stderr


# ---- 18: a checkpoint that cannot be written ends the program (orbax's threads of the failed save used to keep it
# alive for 20 minutes after its message)

@pytest.mark.parametrize("when", ["at start", "mid-run"])
def test_row_checkpoints_folder_is_a_file(tmp, when):
  """<workdir>/checkpoints is a file from the start, or is made one after step 3 (the checkpoint of step 2, whole,
  moved aside first): one line, exit 2, well within the child's timeout; the moved checkpoint still restores."""
  if when == "at start":
    (tmp / "w").mkdir()
    (tmp / "w" / "checkpoints").write_text("")
  r = _signalled(tmp, None if when == "at start" else "checkpoints-file:3", steps=6)
  assert r.returncode == cli.EXIT_USAGE, r.stderr[-3000:]
  lines = _lines(r.stderr)
  assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
  assert "(Not a directory); last complete checkpoint: none. Free space (or fix the directory)" in lines[0], lines
  if when == "mid-run":
    (tmp / "w" / "checkpoints").unlink()
    (tmp / "w" / "checkpoints.moved").rename(tmp / "w" / "checkpoints")
    assert checkpoints.steps(tmp / "w") == [2]
    chex.assert_tree_all_finite(_params(tmp / "w", 2))


# ---- 19, 20: a full disk, real (a 48 MB tmpfs) and simulated (tensorstore's error, the metrics writer's ENOSPC)

@pytest.fixture
def small_disk(tmp):
  """A 48 MB tmpfs at tmp/disk (mounting needs root: CI runs as root): room for the three 8 MB checkpoints a run
  has on disk at most (two kept, one being written)."""
  disk = tmp / "disk"
  disk.mkdir()
  try:
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)], capture_output=True, text=True,
                       timeout=60)
  except FileNotFoundError:
    pytest.skip("no mount command here: the simulated rows cover disk full")
  if r.returncode:
    pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}): the simulated rows cover disk full")
  yield disk
  subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=60)   # lazy: a busy mount goes when freed


def test_row_disk_full_for_real(tmp, small_disk):
  """The file system fills up after step 3 (a filler file): one line naming the full disk, exit 2, step 2 intact;
  with space freed the same command resumes and ends with the state of an uninterrupted run, bit for bit."""
  w = small_disk / "w"
  r = _signalled(tmp, "fill:3", workdir=w)
  assert r.returncode == cli.EXIT_USAGE, r.stderr[-3000:]
  lines = _lines(r.stderr)
  assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
  assert "(No space left on device); last complete checkpoint: step 2. Free space" in lines[0], lines
  assert checkpoints.steps(w) == [2]
  (small_disk / "filler").unlink()
  assert _signalled(tmp, None, workdir=w).returncode == 0
  assert _signalled(tmp, None, workdir=tmp / "straight").returncode == 0
  chex.assert_trees_all_equal(checkpoints.restore(w, step=8), checkpoints.restore(tmp / "straight", step=8))


_TENSORSTORE_ENOSPC = ('RESOURCE_EXHAUSTED: Error writing local file "{}": Failed to write 4096 bytes to file 7: No '
                       "space left on device [os_error_code='28'] [tensorstore_spec='{{}}']")


def test_row_disk_full_simulated(tmp, capsys, monkeypatch):
  """tensorstore's error for a full disk (a ValueError, as it arrives from a real one) from the save of step 4, then
  ENOSPC from metrics.jsonl (whose close fails again): one line each, exit 2; each rerun resumes from step 2."""
  import orbax.checkpoint as ocp

  from jaxtricks import writers
  assert _classify(tmp, "--steps", "2") == 0
  save = ocp.CheckpointManager.save

  def full_disk(self, step, *a, **k):
    if step == 4:
      raise ValueError(_TENSORSTORE_ENOSPC.format(tmp / "w" / "checkpoints" / "4.orbax-checkpoint-tmp"))
    return save(self, step, *a, **k)
  with monkeypatch.context() as m:
    m.setattr(ocp.CheckpointManager, "save", full_disk)
    capsys.readouterr()
    assert _classify(tmp, "--steps", "6") == cli.EXIT_USAGE
    assert _one_line(capsys).endswith(f"--workdir {tmp / 'w'}: writing failed at step 4 (No space left on device); "
                                      "last complete checkpoint: step 2. Free space (or fix the directory) and run "
                                      "again to resume from it")
  enospc = OSError(28, os.strerror(28))
  with monkeypatch.context() as m:
    m.setattr(writers.JsonlWriter, "write_scalars", lambda self, step, values: (_ for _ in ()).throw(enospc))
    m.setattr(writers.JsonlWriter, "close", lambda self: (_ for _ in ()).throw(enospc))
    assert _classify(tmp, "--steps", "6") == cli.EXIT_USAGE
    # the first write after resuming from step 2 is step 3's (its first_step_s, once step 3 has run)
    assert "writing failed at step 3 (No space left on device); last complete checkpoint: step 2" in _one_line(capsys)
  assert checkpoints.steps(tmp / "w") == [2]
  assert _classify(tmp, "--steps", "6") == 0
  assert [r["step"] for r in loop.read_metrics(tmp / "w") if "loss" in r] == list(range(1, 7))


def test_row_metrics_jsonl_deleted_mid_run(tmp, capsys):
  """metrics.jsonl deleted after step 3: the next write (step 3's metrics, read one step late) says so (one line,
  exit 2) instead of writing to no file;
  the rerun resumes from step 2 and writes a new metrics.jsonl from step 3 on."""
  def delete(step, state):
    if step == 3:
      (tmp / "w" / "metrics.jsonl").unlink()
  argv = ["--data-dir", str(tmp / "raw"), "--workdir", str(tmp / "w"), *RUN, "--steps", "6"]
  rc = cli.main(classify.Config, lambda c: classify.run(c, actions=[loop.Periodic(1, delete, at_end=False)]),
                argv=argv, prog="classify")
  assert rc == cli.EXIT_USAGE
  line = _one_line(capsys)
  assert "writing failed at step 3 (metrics.jsonl was deleted while the run was writing it); last complete " \
         "checkpoint: step 2" in line, line
  assert _classify(tmp, "--steps", "6") == 0
  assert [r["step"] for r in loop.read_metrics(tmp / "w") if "loss" in r] == [3, 4, 5, 6]


# ---- 12, 13, 15

def test_row_metrics_jsonl_is_a_directory(tmp, capsys):
  (tmp / "w" / "metrics.jsonl").mkdir(parents=True)
  assert _classify(tmp, "--steps", "2") == cli.EXIT_USAGE
  assert "metrics.jsonl: cannot be written" in _one_line(capsys)


def test_row_sample_out_is_a_directory(tmp, capsys):
  (tmp / "pngs").mkdir()
  rc = cli.main(ebm_sample.Config, ebm_sample.run, argv=["--workdirs", str(tmp / "w"), "--out", str(tmp / "pngs")])
  assert rc == cli.EXIT_USAGE and f"--out {tmp / 'pngs'}: is a directory" in _one_line(capsys)


def test_row_fewer_steps_than_done(tmp, capsys):
  assert _classify(tmp, "--steps", "4") == 0
  capsys.readouterr()
  assert _classify(tmp, "--steps", "3") == 0
  assert _one_line(capsys) == f"{tmp / 'w'}: already at step 4 >= the 3 steps asked for; nothing to train"


# ---- issue 36, item 5: tracebacks for user mistakes or a damaged environment

def _limited_memory():   # the child's address space capped, so an allocation that cannot fit fails at once
  import resource
  resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))


def test_row_out_of_memory_leaves_an_empty_workdir(tmp):
  """A width whose weights cannot be allocated: one line, exit 2; the workdir is left empty, so it is not bound to
  the failed settings (that a rerun then trains in such a workdir is test_loop's
  test_a_failed_first_step_leaves_the_new_workdir_empty_then_a_rerun_trains)."""
  env = child_env(TFDS_DATA_DIR=str(tmp / "tfds"), JAXTRICKS_OFFLINE="1")
  argv = [sys.executable, "-m", "train.gan", "--data-dir", str(tmp / "raw"), "--workdir", str(tmp / "w"), "--steps",
          "1", "--batch-size", "8", "--fid-every", "0", "--no-progress", "--no-tensorboard", "--width"]
  r = subprocess.run(argv + ["20000"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                     preexec_fn=_limited_memory)
  lines = _lines(r.stderr)
  assert r.returncode == cli.EXIT_USAGE and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
  assert lines[0].startswith("python -m train.gan: error: the run does not fit in the device's memory (") and (
      "make it smaller (a lower --batch-size, a smaller model)") in lines[0], lines
  assert list((tmp / "w").iterdir()) == []   # nothing written before a first step: not bound to the failed settings


@contextlib.contextmanager
def read_only(folder):
  """`folder` read-only for this process: a read-only bind mount where it may mount (root, as CI runs: root ignores
  permission bits), else its permission bits."""
  folder = str(folder)
  if os.geteuid() != 0:
    modes = {p: p.stat().st_mode for p in [Path(folder), *Path(folder).rglob("*")]}
    for p, mode in modes.items():
      p.chmod(mode & ~0o222)
    try:
      yield
    finally:
      for p, mode in modes.items():
        p.chmod(mode)
    return
  if subprocess.run(["mount", "--bind", folder, folder], capture_output=True).returncode:
    pytest.skip("cannot make a read-only folder: root here, but not allowed to mount")
  try:
    subprocess.run(["mount", "-o", "remount,ro,bind", folder, folder], check=True, capture_output=True)
    yield
  finally:
    subprocess.run(["umount", folder], check=True)


def test_row_eval_only_on_a_read_only_workdir(tmp, capsys):
  """The accuracy is printed first; then one line says eval.json could not be written, exit 2."""
  assert _classify(tmp, "--steps", "2") == 0
  capsys.readouterr()
  with read_only(tmp / "w"):
    rc = _classify(tmp, "--steps", "2", "--eval-only")
    captured = capsys.readouterr()
  assert rc == cli.EXIT_USAGE
  assert captured.out.startswith(f"{tmp / 'w'} step 2: test/accuracy="), captured.out
  line = _one_line_of(captured.err)
  assert line == (f"classify: error: --workdir {tmp / 'w'}: eval.json cannot be written there (Read-only file "
                  "system); the values printed above are not saved: make the folder writable to keep them") or (
      os.geteuid() != 0 and "eval.json cannot be written there (Permission denied)" in line), line
  assert not (tmp / "w" / "eval.json").exists()


def test_row_feature_net_output_is_a_directory(tmp, capsys):
  """Refused before the training (it was found when the weights were written, after it)."""
  (tmp / "weights").mkdir()
  rc = cli.main(feature_net.Config, feature_net.run, argv=["--output", str(tmp / "weights")], prog="feature_net")
  assert rc == cli.EXIT_USAGE
  assert _one_line(capsys) == f"feature_net: error: --output {tmp / 'weights'}: is a directory; give a file name for the weights"


def _cache_of(tmp) -> Path:
  """The prepared-data cache of the fake Fashion-MNIST (builders.cache_dir), prepared now."""
  from jaxtricks.data import builders, load
  load("fashion_mnist", "test", data_dir=str(tmp / "raw"))
  return Path(builders.cache_dir(builders.BUILDERS["fashion_mnist"].SOURCE, str(tmp / "raw"), None))


@pytest.mark.parametrize("damage", ["dataset_info.json not JSON", "record file truncated"])
def test_row_damaged_data_cache(damage, tmp, capsys):
  """TFDS's or ArrayRecord's error names the cache folder to delete; deleting it rebuilds the cache."""
  cache = _cache_of(tmp)
  version = next(cache.rglob("dataset_info.json")).parent
  if damage == "dataset_info.json not JSON":
    (version / "dataset_info.json").write_text("{not json")
  else:
    for kept in version.glob("*.arrays.npz"):
      kept.unlink()
    record = next(version.glob("*-train.array_record-*"))
    record.write_bytes(record.read_bytes()[:5000])
  assert _classify(tmp, "--steps", "1") == cli.EXIT_USAGE
  line = _one_line(capsys)
  assert line.startswith(f"classify: error: {cache}: the prepared data cache is damaged (") and line.endswith(
      "); delete that folder and run again (it is rebuilt from the raw files)"), line
  shutil.rmtree(cache)
  assert _cache_of(tmp) == cache


def test_row_read_only_complete_data_cache(tmp, capsys):
  """A prepared cache on a read-only file system (a cluster's shared cache) is read, not locked."""
  _cache_of(tmp)
  with read_only(tmp / "tfds"):
    assert _classify(tmp, "--steps", "1") == 0


def test_row_home_read_only(tmp, capsys, monkeypatch):
  """No TFDS_DATA_DIR and a read-only HOME: the default cache cannot be made; one line says what to set."""
  (tmp / "home").mkdir()
  monkeypatch.delenv("TFDS_DATA_DIR")
  monkeypatch.setenv("HOME", str(tmp / "home"))
  with read_only(tmp / "home"):
    assert _classify(tmp, "--steps", "1") == cli.EXIT_USAGE
  line = _one_line(capsys)
  assert line.startswith(f"classify: error: {tmp / 'home' / 'tensorflow_datasets' / 'jaxtricks'}/") and (
      "the prepared-data cache cannot be written there (") in line and line.endswith(
      "set TFDS_DATA_DIR to a writable folder (the default is ~/tensorflow_datasets)"), line
  assert not (tmp / "w").exists()   # refused before the workdir is made


def test_row_gan_divergence_names_its_own_flags(tmp, capsys):
  """train.gan has --lr-g and --lr-d, not --lr; with no checkpoint yet the advice is to run again, not resume."""
  rc = cli.main(train_gan.Config, train_gan.run, argv=[
      "--data-dir", str(tmp / "raw"), "--workdir", str(tmp / "w"), "--steps", "6", "--batch-size", "8", "--width",
      "8", "--lr-g", "1e30", "--lr-d", "1e30", "--fid-every", "0", "--no-progress", "--no-tensorboard"], prog="gan")
  line = _one_line(capsys)
  assert rc == cli.EXIT_DIVERGED and "training diverged at step" in line, line
  assert line.endswith(f"last good checkpoint: none in {tmp / 'w'}. Run again with a lower --lr-g and --lr-d"), line


def test_docs_list_every_row():
  doc = (REPO / "docs" / "reliability.md").read_text()
  table = doc[doc.index("## Reliability"):]
  names = [n[len("test_row_"):] for n in globals() if n.startswith("test_row_")]
  for name in names:
    assert f"`{name}`" in table, f"docs/reliability.md's reliability table lacks the row {name!r}"


def test_row_out_of_memory_after_the_first_step_before_a_checkpoint(tmp, capsys, monkeypatch):
  """Out of memory in an evaluation after step 1 (before any checkpoint): one line; what the run wrote is removed,
  so the smaller rerun the message advises may use the workdir; a workdir that holds a checkpoint is left bound."""
  import jax

  def evaluation_out_of_memory(step, state):
    raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9 GiB")

  run = classify.run
  monkeypatch.setattr(classify, "run", lambda config, actions=(): run(config, [loop.Periodic(2, evaluation_out_of_memory)]))
  argv = ["--data-dir", str(tmp / "raw"), "--workdir", str(tmp / "w"), "--steps", "4", "--no-progress",
          "--checkpoint-every", "3"]
  assert cli.main(classify.Config, classify.run, argv=argv + ["--batch-size", "32"], prog="classify") == cli.EXIT_USAGE
  assert "does not fit in the device's memory" in _one_line(capsys)
  assert list((tmp / "w").iterdir()) == []          # config.json, metrics.jsonl, events: removed
  monkeypatch.setattr(classify, "run", run)
  assert cli.main(classify.Config, classify.run, argv=argv + ["--batch-size", "16"], prog="classify") == 0
  assert json.loads((tmp / "w" / "config.json").read_text())["batch_size"] == 16
  # with a checkpoint (step 3) in the workdir, the same failure leaves the run bound to its settings
  monkeypatch.setattr(classify, "run", lambda config, actions=(): run(config, [loop.Periodic(5, evaluation_out_of_memory)]))
  capsys.readouterr()
  assert cli.main(classify.Config, classify.run, argv=argv[:-4] + ["--steps", "6", "--checkpoint-every", "3",
                                                                  "--batch-size", "16"], prog="classify") == cli.EXIT_USAGE
  assert (tmp / "w" / "config.json").exists() and checkpoints.steps(tmp / "w")
