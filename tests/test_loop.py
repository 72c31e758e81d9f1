"""The shared training loop on a toy problem (in process) — resume, divergence guard, workdir checks."""

import errno
import fcntl
import json
import os
import stat

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtricks import checkpoints, errors, loop, workdir, writers
from jaxtricks.errors import ConfigError, DivergenceError, WorkdirError


def _toy(nan_at=None, huge_at=None):
  """Noisy linear regression; the loss is NaN (or huge) at state step `nan_at` (`huge_at`)."""
  w_true = jnp.array([1.0, -2.0, 0.5])

  def init():
    return {"w": jnp.zeros(3), "step": jnp.zeros((), jnp.int32)}

  @jax.jit
  def train_step(state, batch, key):
    def loss_fn(w):
      return jnp.mean((batch["x"] @ w - batch["y"]) ** 2)
    loss, g = jax.value_and_grad(loss_fn)(state["w"])
    w = state["w"] - 0.1 * g + 0.01 * jax.random.normal(key, (3,))
    if nan_at is not None:
      loss = jnp.where(state["step"] == nan_at, jnp.nan, loss)
      w = jnp.where(state["step"] == nan_at, jnp.nan, w)
    if huge_at is not None:
      loss = jnp.where(state["step"] == huge_at, 1e12, loss)
    return {"w": w, "step": state["step"] + 1}, {"loss": loss}

  def batches(step):
    x = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(1), step), (8, 3))
    return {"x": x, "y": x @ w_true}

  return dict(init_fn=init, train_step=train_step, batches=batches, key=jax.random.PRNGKey(0))


def _run(workdir, steps, every=5, actions=(), fingerprint=None, tensorboard=False, **toy):
  config = loop.LoopConfig(steps=steps, workdir=str(workdir), checkpoint_every=every, progress=False,
                           tensorboard=tensorboard)
  return loop.run(config, actions=actions, fingerprint=fingerprint, **_toy(**toy))


def _lines(workdir):
  return loop.read_metrics(workdir)


def test_resume_equals_uninterrupted(tmp_path):
  straight = _run(tmp_path / "a", 20)
  _run(tmp_path / "b", 12)      # checkpoints at 5, 10 and the end, 12
  resumed = _run(tmp_path / "b", 20)
  assert int(resumed["step"]) == 20
  np.testing.assert_allclose(resumed["w"], straight["w"], rtol=0, atol=0)
  # metrics.jsonl holds each step once, in order
  steps = [l["step"] for l in _lines(tmp_path / "b") if "loss" in l]
  assert steps == list(range(1, 21))
  # training did something
  assert float(jnp.abs(straight["w"] - jnp.array([1.0, -2.0, 0.5])).max()) < 0.3


@pytest.mark.parametrize("bad", [{"nan_at": 7}, {"huge_at": 7}])
def test_divergence_guard_keeps_last_good_checkpoint(tmp_path, bad):
  with pytest.raises(DivergenceError, match=r"diverged at step 8.*last good checkpoint: step 5") as e:
    _run(tmp_path, 20, **bad)
  assert "\n" not in str(e.value)
  state, _, step = checkpoints.restore(tmp_path, jax.eval_shape(_toy()["init_fn"]))
  assert step == 5 and int(state["step"]) == 5
  assert np.all(np.isfinite(state["w"]))
  # nothing from the failing step was logged as a good step
  assert max(l["step"] for l in _lines(tmp_path) if "loss" in l) < 8


def test_divergence_before_first_checkpoint_says_none(tmp_path):
  with pytest.raises(DivergenceError, match="last good checkpoint: none"):
    _run(tmp_path, 20, nan_at=1)


def test_actions_see_every_step(tmp_path):
  seen = []
  _run(tmp_path, 7, actions=[loop.Periodic(1, lambda step, state: seen.append((step, int(state["step"]))))])
  assert seen == [(s, s) for s in range(1, 8)]


def test_periodic_due_every_n_and_at_the_end():
  due = lambda p: [s for s in range(1, 11) if p.due(s, 10)]
  assert due(loop.Periodic(4, None)) == [4, 8, 10]
  assert due(loop.Periodic(4, None, at_end=False)) == [4, 8]
  assert due(loop.Periodic(0, None)) == [10]          # 0: only at the end
  assert due(loop.Periodic(5, None)) == [5, 10]       # the end is not run twice


def test_action_results_are_logged_as_metrics_and_grids(tmp_path):
  images = np.zeros((4, 3, 3, 1), np.float32)
  _run(tmp_path, 6, actions=[loop.Periodic(3, lambda step, state: {"w0": state["w"][0], "grid": images})])
  evals = loop.metric(_lines(tmp_path), "w0")
  assert [s for s, _ in evals] == [3, 6] and all(np.isfinite(v) for _, v in evals)
  assert sorted(p.name for p in tmp_path.glob("grid_*.png")) == ["grid_000003.png", "grid_000006.png"]


def test_restore_or_init_inits_then_restores(tmp_path):
  toy = _toy()
  mngr = checkpoints.manager(tmp_path)
  state, key, start = checkpoints.restore_or_init(mngr, tmp_path, toy["init_fn"], toy["key"])
  assert start == 0 and int(state["step"]) == 0
  mngr.close()
  _run(tmp_path, 5)
  mngr = checkpoints.manager(tmp_path)
  state, key, start = checkpoints.restore_or_init(mngr, tmp_path, toy["init_fn"], jax.random.PRNGKey(99))
  mngr.close()
  assert start == 5 and int(state["step"]) == 5
  np.testing.assert_array_equal(key, jax.random.PRNGKey(0))   # the run's own key, not the one passed


_BITWISE_CHILD = """
import sys, flax.linen as nn, jax, jax.numpy as jnp, numpy as np
from jaxtricks import checkpoints
net = nn.Sequential([nn.Conv(4, (3, 3)), nn.Dense(3)])
init_fn = lambda: net.init(jax.random.PRNGKey(3), jnp.zeros((1, 8, 8, 1)))
mngr = checkpoints.manager(sys.argv[1])
state, _, start = checkpoints.restore_or_init(mngr, sys.argv[1], init_fn, jax.random.PRNGKey(0))
mngr.close()
eager = init_fn()
assert start == 0 and len(jax.tree.leaves(eager)) == len(jax.tree.leaves(state)) == 4
for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(state)):
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
"""


def test_first_state_is_bitwise_an_eager_init(tmp_path):
  """restore_or_init compiles init_fn (checkpoints.init_once): the state must hold the very bits an eager init gives, so
  runs and results made with an eager init reproduce (at XLA's LLVM levels 0-2 this net's Dense kernel differs in
  the last bit: measured 2026-12-02). In a child with the production XLA_FLAGS, not the tests' lower level."""
  import subprocess
  import sys

  from conftest import PRODUCTION_XLA_FLAGS, REPO, child_env
  r = subprocess.run([sys.executable, "-c", _BITWISE_CHILD, str(tmp_path / "w")], cwd=REPO,
                     env=child_env(XLA_FLAGS=PRODUCTION_XLA_FLAGS), capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]


def test_restore_without_target_gives_the_saved_arrays(tmp_path):
  final = _run(tmp_path, 5)
  tree, key, step = checkpoints.restore(tmp_path)
  assert step == 5 and set(tree) == {"w", "step"}
  np.testing.assert_array_equal(tree["w"], final["w"])


def test_non_finite_state_is_never_saved(tmp_path):
  """The loss stays finite, but a state leaf the loss does not read (an optimizer moment, say) turns NaN at
  step 7: the checkpoint of step 10 is refused and step 5 stays the last one."""
  toy = _toy()
  init, step = toy["init_fn"], toy["train_step"]

  def poisoned(state, batch, key):
    new, m = step({"w": state["w"], "step": state["step"]}, batch, key)
    return {**new, "moment": jnp.where(new["step"] >= 7, jnp.nan, state["moment"])}, m
  config = loop.LoopConfig(steps=20, workdir=str(tmp_path), checkpoint_every=5, progress=False, tensorboard=False)
  with pytest.raises(DivergenceError, match=r"step 10: the state holds non-finite values.*last good checkpoint: step 5"):
    loop.run(config, **{**toy, "init_fn": lambda: {**init(), "moment": jnp.zeros(2)}, "train_step": poisoned})
  assert checkpoints.manager(tmp_path).latest_step() == 5


def test_resume_trims_redone_steps_and_a_half_written_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n{"step": 3, "loss": 0.2}\n{"step": 4, "lo')
  w = writers.JsonlWriter(path, resume_step=2)
  w.write_scalars(3, {"loss": 0.25})
  w.close()
  assert writers.read_jsonl(path) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}, {"step": 3, "loss": 0.25}]
  assert w.trimmed == 2


def test_tensorboard_events_hold_the_logged_scalars(tmp_path):
  """A 3-step run with TensorBoard on: every scalar of metrics.jsonl is in the event file, read back with
  writers.read_tensorboard (steps and values alike)."""
  _run(tmp_path, 3, actions=[loop.Periodic(0, lambda step, state: {"eval/w0": state["w"][0]})], tensorboard=True)
  events = writers.read_tensorboard(tmp_path)
  rows = _lines(tmp_path)
  for name in ("loss", "steps_per_sec", "first_step_s", "eval/w0"):
    want = loop.metric(rows, name)
    assert want and [s for s, _ in events[name]] == [s for s, _ in want], name
    np.testing.assert_allclose([v for _, v in events[name]], [v for _, v in want], rtol=1e-6)


def test_tensorboard_after_resume_shows_each_step_once(tmp_path):
  _run(tmp_path, 12, tensorboard=True)   # checkpoints at 5, 10, 12
  (tmp_path / "checkpoints" / "12").rename(tmp_path / "checkpoints" / "gone")   # as if killed after step 12's log
  import shutil
  shutil.rmtree(tmp_path / "checkpoints" / "gone")
  _run(tmp_path, 14, tensorboard=True)   # resumes from 10
  steps = [s for s, _ in writers.read_tensorboard(tmp_path)["loss"]]
  assert steps == list(range(1, 15))


def test_other_configuration_refused(tmp_path):
  _run(tmp_path, 5, fingerprint={"model": "cnn"})
  with pytest.raises(WorkdirError, match="another configuration .*model: 'cnn' there, 'mobilenet' now"):
    _run(tmp_path, 10, fingerprint={"model": "mobilenet"})
  assert checkpoints.manager(tmp_path).latest_step() == 5   # nothing lost


def test_a_setting_added_to_a_programs_fingerprint_later_is_checked_only_where_recorded(tmp_path):
  """harness.fingerprint(since=...): a run made before a setting joined the fingerprint resumes (its value then is
  unknown, the setting is left out); a run that records it is checked for it; a setting not named in `since` that
  the saved run lacks is refused like any other difference."""
  import dataclasses

  from jaxtricks import harness

  @dataclasses.dataclass(frozen=True)
  class Config:
    workdir: str
    model: str = "cnn"
    logit_batchnorm: bool = False
  old = Config(str(tmp_path / "old"))
  _run(tmp_path / "old", 5, fingerprint={"model": "cnn"})
  assert harness.fingerprint(old, ["model", "logit_batchnorm"], since=["logit_batchnorm"]) == {"model": "cnn"}
  _run(tmp_path / "old", 10, fingerprint=harness.fingerprint(old, ["model", "logit_batchnorm"],
                                                             since=["logit_batchnorm"]))
  assert checkpoints.manager(tmp_path / "old").latest_step() == 10
  new = Config(str(tmp_path / "new"), logit_batchnorm=True)
  _run(tmp_path / "new", 5, fingerprint=harness.fingerprint(new, ["model", "logit_batchnorm"], since=["logit_batchnorm"]))
  flipped = harness.fingerprint(dataclasses.replace(new, logit_batchnorm=False), ["model", "logit_batchnorm"],
                                since=["logit_batchnorm"])
  with pytest.raises(WorkdirError, match="another configuration .*logit_batchnorm: True there, False now"):
    _run(tmp_path / "new", 12, fingerprint=flipped)
  with pytest.raises(WorkdirError, match="logit_batchnorm: None there, False now"):
    _run(tmp_path / "old", 12, fingerprint=harness.fingerprint(old, ["model", "logit_batchnorm"]))


def test_checkpoint_of_another_shape_refused(tmp_path):
  _run(tmp_path, 5)
  abstract = {"w": jax.ShapeDtypeStruct((4,), jnp.float32), "step": jax.ShapeDtypeStruct((), jnp.int32)}
  with pytest.raises(WorkdirError, match="does not fit this model"):
    checkpoints.restore(tmp_path, abstract)


def test_unwritable_workdir(tmp_path):
  (tmp_path / "file").write_text("")
  with pytest.raises(WorkdirError, match="not writable"):
    _run(tmp_path / "file" / "run", 5)


def test_nonpositive_steps(tmp_path):
  with pytest.raises(ConfigError, match="steps must be positive") as e:
    _run(tmp_path, 0)
  assert e.value.render(lambda s: "--" + s) == "--steps must be positive, got 0"


def test_write_failure_reads_tensorstore_errors():
  """A failed write is named the same whether Python or tensorstore (a ValueError with the OS error code) reports it;
  other errors, and ours, are not failed writes."""
  from jaxtricks import checkpoints
  full = ValueError("RESOURCE_EXHAUSTED: Error writing local file \"x\": Failed to write 217 bytes to file 3: No space "
                    "left on device [os_error_code='28'] [tensorstore_spec='{}']")
  assert checkpoints.write_failure(full) == "No space left on device"
  assert checkpoints.write_failure(ValueError("FAILED_PRECONDITION: ... [os_error_code='20']")) == "Not a directory"
  assert checkpoints.write_failure(OSError(28, "No space left on device")) == "No space left on device"
  try:
    try:
      raise OSError(30, "Read-only file system")
    except OSError as e:
      raise RuntimeError("wrapped") from e
  except RuntimeError as wrapped:
    assert checkpoints.write_failure(wrapped) == "Read-only file system"
  assert checkpoints.write_failure(ValueError("shapes differ")) is None
  assert checkpoints.write_failure(WorkdirError("workdir", "not writable")) is None
  assert checkpoints.write_failure(None) is None


def test_last_resort_exit_when_a_thread_will_not_stop():
  """A thread that never ends would keep the interpreter from exiting; exit_when_stuck ends the process with the
  given status once it has had its time (without it this child hangs and the timeout fails the test)."""
  import subprocess
  import sys

  from conftest import REPO, child_env
  code = ("import threading; from jaxtricks import checkpoints; checkpoints.THREADS_TIMEOUT_S = 0.5; "
          "t = threading.Thread(target=threading.Event().wait); t.start(); "
          "checkpoints.exit_when_stuck([t], 2); print('printed before the exit')")
  r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=child_env(), capture_output=True, text=True,
                     timeout=120)
  assert r.returncode == 2 and r.stdout == "printed before the exit\n", (r.returncode, r.stdout, r.stderr[-2000:])


def _signal_after_step(n, signum):
  """A Periodic action that sends this process `signum` when step n is done (a preemption arriving then)."""
  import os
  return loop.Periodic(every=1, fn=lambda step, state: os.kill(os.getpid(), signum) if step == n else None)


def test_a_stop_signal_at_a_middle_step_runs_that_steps_actions_then_stops(tmp_path):
  import signal
  evals = loop.Periodic(every=3, fn=lambda step, state: {"eval": float(step)})
  with pytest.raises(errors.Interrupted) as stopped:
    _run(tmp_path / "w", 10, actions=[_signal_after_step(5, signal.SIGTERM), evals])
  assert stopped.value.signum == signal.SIGTERM
  # the signal came during step 5's actions: step 6 ran, was saved, and its due action (none) ran; then it stopped
  assert checkpoints.steps(tmp_path / "w")[-1] == 6
  final = _run(tmp_path / "w", 10, actions=[evals])
  assert int(final["step"]) == 10
  assert [l["step"] for l in _lines(tmp_path / "w") if "eval" in l] == [3, 6, 9, 10]


def test_a_stop_signal_at_the_last_step_finishes_the_run_with_its_end_actions(tmp_path):
  """A preemption that arrives during the last step must not cost the actions due at the end (a resumed run would
  find nothing to train and never run them)."""
  import signal
  at_end = loop.Periodic(every=100, fn=lambda step, state: {"final_eval": 1.0})
  final = _run(tmp_path / "w", 4, actions=[_signal_after_step(3, signal.SIGTERM), at_end])
  assert int(final["step"]) == 4
  assert [l["step"] for l in _lines(tmp_path / "w") if "final_eval" in l] == [4]


def test_an_ignored_signal_stays_ignored(tmp_path):
  """`nohup` ignores SIGHUP: the run must not start honouring it."""
  import signal

  from jaxtricks.signals import StopRequests
  previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
  try:
    with StopRequests():
      assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
      assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
  finally:
    signal.signal(signal.SIGHUP, previous)


# ---- a new run writes nothing to its workdir before its first step has succeeded (issue 36)

def _failing_first_step(how):
  """The toy's step, failing at its first call: raising (what a failed check of the first batch, or running out of
  memory, does), or a NaN loss (the divergence guard)."""
  toy = _toy()
  step, calls = toy["train_step"], []

  def first_fails(state, batch, key):
    calls.append(1)
    if how == "raises" and len(calls) == 1:
      raise errors.DataError(None, "the first training batch fails a check")
    new, metrics = step(state, batch, key)
    if how == "nan" and len(calls) == 1:
      metrics = {**metrics, "loss": jnp.float32(jnp.nan)}
    return new, metrics
  return {**toy, "train_step": first_fails}


@pytest.mark.parametrize("how", ["raises", "nan"])
def test_a_failed_first_step_leaves_the_new_workdir_empty_then_a_rerun_trains(tmp_path, how):
  config = loop.LoopConfig(steps=6, workdir=str(tmp_path / "w"), checkpoint_every=2, progress=False, tensorboard=True)
  with pytest.raises(errors.DataError if how == "raises" else DivergenceError) as failed:
    loop.run(config, fingerprint={"lr": 1.0}, **_failing_first_step(how))
  if how == "nan":
    assert "diverged at step 1: loss=nan; last good checkpoint: none" in str(failed.value)
  assert (tmp_path / "w").is_dir() and list((tmp_path / "w").iterdir()) == []   # the folder the run made, empty
  final = _run(tmp_path / "w", 6, every=2, fingerprint={"lr": 0.5}, tensorboard=True)   # other settings: not bound
  assert int(final["step"]) == 6
  assert [s for s, _ in loop.metric(_lines(tmp_path / "w"), "loss")] == list(range(1, 7))   # step 1 logged too
  assert json.loads((tmp_path / "w" / "config.json").read_text()) == {"lr": 0.5}


def test_nothing_is_in_the_workdir_while_the_first_step_runs_yet_it_is_locked(tmp_path):
  """What the workdir holds at each call of the step: nothing at the first (and a second run is refused all the
  same: the lock is on the folder), the run's files from the second on; no lock file is left."""
  toy = _toy()
  step, seen, refusals = toy["train_step"], [], []

  def watched(state, batch, key):
    seen.append(sorted(p.name for p in (tmp_path / "w").iterdir()))
    with pytest.raises(WorkdirError, match=rf"another run \(pid {os.getpid()}\) is using it") as refused:
      workdir.WorkdirLock(tmp_path / "w").__enter__()
    refusals.append(refused.value)
    return step(state, batch, key)
  config = loop.LoopConfig(steps=3, workdir=str(tmp_path / "w"), checkpoint_every=2, progress=False, tensorboard=True)
  loop.run(config, **{**toy, "train_step": watched})
  assert seen[0] == [] and len(refusals) == 3
  assert {"config.json", "metrics.jsonl", "checkpoints"} <= set(seen[1]), seen
  assert any(name.startswith("events.out.tfevents.") for name in seen[1]), seen
  assert ".lock" not in {p.name for p in (tmp_path / "w").iterdir()}
  with workdir.WorkdirLock(tmp_path / "w"):   # released at the end
    pass


def test_a_resumed_run_opens_its_outputs_before_its_first_step(tmp_path):
  """A resumed run keeps what it finds and trims metrics.jsonl to its checkpoint before training on."""
  _run(tmp_path, 6, every=4)   # checkpoints 4 and 6
  (tmp_path / "checkpoints" / "6").rename(tmp_path / "gone")   # as if killed after step 6's log
  toy = _toy()
  step, seen = toy["train_step"], []

  def watched(state, batch, key):
    seen.append([r["step"] for r in _lines(tmp_path) if "loss" in r])
    return step(state, batch, key)
  config = loop.LoopConfig(steps=6, workdir=str(tmp_path), checkpoint_every=4, progress=False, tensorboard=False)
  loop.run(config, **{**toy, "train_step": watched})
  assert seen[0] == [1, 2, 3, 4]
  assert [r["step"] for r in _lines(tmp_path) if "loss" in r] == list(range(1, 7))


def test_lock_falls_back_to_a_lock_file_where_a_folder_cannot_be_locked(tmp_path, monkeypatch):
  """NFS emulates flock with POSIX locks, which refuse a folder (EBADF: not open for writing): the lock is then
  <workdir>/.lock, holding the owner's pid, and still refuses a second run."""
  flock = fcntl.flock

  def no_folder_locks(f, op):
    fd = f if isinstance(f, int) else f.fileno()
    if stat.S_ISDIR(os.fstat(fd).st_mode):
      raise OSError(errno.EBADF, "Bad file descriptor")
    return flock(f, op)
  monkeypatch.setattr(fcntl, "flock", no_folder_locks)
  with workdir.WorkdirLock(tmp_path):
    assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    with pytest.raises(WorkdirError, match=rf"another run \(pid {os.getpid()}\) is using it"):
      workdir.WorkdirLock(tmp_path).__enter__()
  with workdir.WorkdirLock(tmp_path):   # released
    pass
