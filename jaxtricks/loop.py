"""The one training loop every `train.*` program uses.

    state = loop.run(config, init_fn=init, train_step=step, batches=batches, key=key,
                     actions=[loop.Periodic(every=1000, fn=evaluate)])

`train_step(state, batch, key) -> (state, metrics)` is pure and already jitted; the loop passes
`fold_in(key, step)` and never synchronizes on the step just dispatched: metrics are read one step late. The batch
of step s depends only on (key, s), so a resumed run equals an uninterrupted one. Around the steps:

* the workdir is checked, locked and fingerprinted (jaxtricks.workdir); the run starts from its newest intact
  checkpoint or from `init_fn()`, and saves {state, key} every `checkpoint_every` steps and at the end
  (jaxtricks.checkpoints; `state_sharding` places and restores the state on a mesh);
* a new run (no checkpoint to resume from) writes nothing to its workdir until its first step has succeeded (its
  outputs computed, its metrics through the divergence guard): only then are config.json, metrics.jsonl, the
  TensorBoard events and checkpoints/ made, so a run that fails at its start (out of memory, a failed check of
  the first batch, a step that raises) leaves the workdir as it was, free for other settings. The lock is on the
  folder itself (WorkdirLock). A resumed run opens its outputs before its first step, as it finds them;
* metrics go to metrics.jsonl (the source of truth), TensorBoard events and PNG grids (jaxtricks.writers);
  `read_metrics` reads them back. In a multi-process run only process 0 writes them and config.json; every process
  takes part in orbax's saves;
* `Periodic` actions run every N steps and after the last one (evaluation, sample grids, any callback); what they
  return is logged: floats as metrics, image batches as grids;
* the divergence guard: a non-finite metric or |loss| > `max_abs_loss` stops the run (DivergenceError) before
  anything is saved, and so does a state with a non-finite value at a checkpoint, so the last checkpoint on disk
  is the last good one;
* SIGINT, SIGTERM or SIGHUP (preemption) stop the run after the step in flight, with a checkpoint (Interrupted);
  a failed write (disk full, folder removed) stops it with WorkdirError naming the last complete checkpoint. Every
  way out closes the checkpoints and the writers in one place, with a deadline: the program exits, never hangs.

Errors are jaxtricks.errors types naming the settings `workdir` and `steps`; the program words them as flags.
"""

import contextlib
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxtricks import checkpoints, writers
from jaxtricks.errors import ConfigError, DivergenceError, Interrupted, WorkdirError
from jaxtricks.signals import StopRequests
from jaxtricks.workdir import WorkdirLock, compare_fingerprints, prepare, write_config

State = Any
Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  steps: int
  workdir: str
  checkpoint_every: int = 1000
  max_abs_loss: float = 1e8      # JEM's bound
  keep_checkpoints: int = 2
  progress: bool = True
  tensorboard: bool = True


@dataclasses.dataclass(frozen=True)
class Periodic:
  """`fn(step, state) -> dict | None`, called after every `every`-th step (0: never before the end) and after the
  last step when `at_end`. Returned floats are logged as metrics (and printed when `announce`); arrays of
  images [N, H, W, C] in [0, 1] are written as grids (`<name>_<step>.png` and TensorBoard)."""
  every: int
  fn: Callable[[int, State], dict | None]
  at_end: bool = True
  announce: bool = False

  def due(self, step: int, last_step: int) -> bool:
    return bool(self.every and step % self.every == 0) or (self.at_end and step == last_step)


def run(config: LoopConfig, *, init_fn: Callable[[], State],
        train_step: Callable[[State, Any, jax.Array], tuple[State, Metrics]],
        batches: Callable[[int], Any], key: jax.Array, actions: Iterable[Periodic] = (),
        fingerprint: dict[str, Any] | None = None, state_sharding: Any = None,
        shown: tuple[str, ...] = ("loss", "accuracy")) -> State:
  """Runs `config.steps` steps (resuming from the workdir's newest intact checkpoint) and returns the final state.
  One run per workdir at a time (WorkdirLock, process 0). `shown`: the metrics on the progress bar."""
  if config.steps <= 0:
    raise ConfigError("steps", f"must be positive, got {config.steps}")
  workdir = Path(config.workdir)
  fingerprint = json.loads(json.dumps(fingerprint or {}))
  prepare(workdir, fingerprint)
  lock = WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  with lock, StopRequests() as stop, checkpoints.quiet_write_errors():
    state, key, start = _resume(workdir, fingerprint, init_fn, key, state_sharding)
    with _Outputs(config, workdir, fingerprint, start, shown, stop) as out:
      if start >= config.steps:
        print(f"{workdir}: already at step {start} >= the {config.steps} steps asked for; nothing to train",
              file=sys.stderr)
      step = start
      while step < config.steps:
        t0 = time.perf_counter()
        state, metrics = train_step(state, batches(step), jax.random.fold_in(key, step))
        step += 1
        if step == start + 1:   # waited for: a new run's outputs are opened once it has succeeded
          jax.block_until_ready((state, metrics))
          out.first_step_done(step, metrics, time.perf_counter() - t0)
        else:
          out.report(step, metrics)   # writes the previous step's metrics: this one's are still being computed
        signum = stop.signum
        if step % config.checkpoint_every == 0 or step == config.steps or signum:
          out.save(step, state, key)
        for action in actions:   # before stopping: a resumed run starts after this step and would never run them
          if action.due(step, config.steps):
            out.write(step, action.fn(step, state) or {}, announce=action.announce)
        if signum and step < config.steps:   # at the last step the run is done: it ends as usual
          out.stop(step, signum)
      out.flush()
  return state


def _resume(workdir: Path, fingerprint: dict, init_fn: Callable[[], State], key: jax.Array,
            state_sharding: Any) -> tuple[State, jax.Array, int]:
  """(state, key, step to start from), after checking the settings saved with the newest checkpoint (they travel
  with each checkpoint: a missing config.json hides nothing). Writes nothing; a workdir without a checkpoints
  folder (a new run) gets none here."""
  if not (workdir / "checkpoints").is_dir():
    return checkpoints.restore_or_init(None, workdir, init_fn, key, state_sharding)
  mngr = checkpoints.manager(workdir)
  try:
    latest = mngr.latest_step()
    saved = checkpoints.saved_config(mngr, latest) if latest is not None else None
    if saved is not None:
      compare_fingerprints(workdir, saved, fingerprint)
    return checkpoints.restore_or_init(mngr, workdir, init_fn, key, state_sharding)
  finally:
    mngr.close()


class _Outputs:
  """What a run writes while it trains: config.json, checkpoints, metrics (one step late, through the divergence
  guard) and the progress bar. A resumed run opens them on entry; a new run once its first step has succeeded
  (`first_step_done`), so that a run that fails before leaves its workdir as it was. Its exit is the one way out of
  a run: every error is reworded there, and the checkpoints and writers are closed with a deadline
  (checkpoints.close), so that no thread left behind keeps the program alive."""

  def __init__(self, config: LoopConfig, workdir: Path, fingerprint: dict, start: int, shown: tuple[str, ...],
               stop: StopRequests):
    self.config, self.workdir, self.fingerprint, self.shown, self.stop_requests = config, workdir, fingerprint, shown, stop
    self.start = start
    self.step, self.pending = start, None   # the last step done; its metrics, not yet written
    self.t_last, self.step_last = time.perf_counter(), start
    self.mngr, self.log = None, None   # opened by _open
    self.bar = tqdm(total=config.steps, initial=start, disable=not config.progress, dynamic_ncols=True,
                    desc=workdir.name, mininterval=0.5)

  def __enter__(self):
    try:
      if self.start > 0:   # a resumed run: metrics.jsonl is trimmed to its checkpoint's step before it goes on
        self._open()
    except BaseException as e:
      self.__exit__(type(e), e, e.__traceback__)
      raise
    return self

  def _open(self) -> None:
    """The run's outputs in its workdir: metrics.jsonl and TensorBoard events, the checkpoint manager (which makes
    checkpoints/), and config.json where it is missing (process 0 writes the files; all processes save)."""
    self.log = open_log(self.workdir, self.start, tensorboard=self.config.tensorboard)
    self.mngr = checkpoints.manager(self.workdir, self.config.keep_checkpoints)
    if jax.process_index() == 0 and not (self.workdir / "config.json").exists():
      write_config(self.workdir, self.fingerprint)

  def first_step_done(self, step: int, metrics: Metrics, seconds: float) -> None:
    """The run's first step has finished (its outputs are ready): its metrics go through the divergence guard, the
    outputs of a new run are opened, and its metrics are written at once (they are ready: nothing to wait for)."""
    self.report(step, metrics)
    check_finite(step, {k: float(v) for k, v in jax.device_get(metrics).items()}, self.config.max_abs_loss)
    if self.log is None:
      self._open()
    self.log.write_scalars(step, {"first_step_s": seconds})
    self.flush()

  def report(self, step: int, metrics: Metrics) -> None:
    self.flush()
    self.step, self.pending = step, metrics
    self.bar.update(1)

  def flush(self) -> None:
    """Writes the pending metrics, after the divergence guard has passed them."""
    if self.pending is None:
      return
    values = {k: float(v) for k, v in jax.device_get(self.pending).items()}
    self.pending = None
    check_finite(self.step, values, self.config.max_abs_loss)
    now = time.perf_counter()
    values["steps_per_sec"] = (self.step - self.step_last) / max(now - self.t_last, 1e-9)
    self.t_last, self.step_last = now, self.step
    self.log.write_scalars(self.step, values)
    self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if k in self.shown}, refresh=False)

  def save(self, step: int, state: State, key: jax.Array) -> None:
    """A checkpoint only of a state whose step's metrics and values passed the guard."""
    self.flush()
    check_state_finite(step, state)
    checkpoints.save(self.mngr, step, state, key, self.fingerprint)

  def stop(self, step: int, signum: int) -> None:
    self._finish_saves()
    raise Interrupted(None, f"interrupted at step {step}; checkpoint saved: step {step} in {self.workdir}. Run the "
                      "same command again to resume", signum)

  def write(self, step: int, values: dict, announce: bool = False) -> None:
    scalars = log_values(self.log, step, values)
    if announce and scalars:
      self.bar.write(f"step {step}: {scalar_line(scalars)}")

  def __exit__(self, exc_type, raised, tb):
    self.stop_requests.closing = True
    self.bar.close()
    error = raised
    if isinstance(error, DivergenceError):
      error = self._diverged(error)
    elif checkpoints.write_failure(error):
      error = self._write_failed(error)
    failed, stuck = checkpoints.close(self.mngr) if self.mngr is not None else (None, [])
    if error is None and isinstance(failed, TimeoutError):   # a save still in flight at the deadline
      error = self._not_finished()
    elif error is None and failed is not None:   # the last save failed as it was being finished
      error = self._write_failed(failed) if checkpoints.write_failure(failed) else failed
    error = self._close_log(error)
    if stuck:   # the program that catches `error` ends the process once it knows its exit status
      if error is None:
        checkpoints.exit_when_stuck(stuck, 0)
      else:
        error.stuck_threads = stuck
    if error is not raised:
      raise error from None
    return False   # `raised` (or nothing) goes on

  def _finish_saves(self) -> None:
    """Waits for the saves in flight, at most checkpoints.CLOSE_TIMEOUT_S; their errors are reported by the exit."""
    if self.mngr is not None:
      checkpoints.call_with_deadline(self.mngr.wait_until_finished, checkpoints.CLOSE_TIMEOUT_S)

  def _not_finished(self) -> WorkdirError:
    last = checkpoints.steps(self.workdir)
    return WorkdirError("workdir", f"{self.workdir}: the checkpoint of step {self.step} did not finish writing within "
                        f"{checkpoints.CLOSE_TIMEOUT_S:.0f} s; last complete checkpoint: "
                        f"{f'step {last[-1]}' if last else 'none'}. Run again to resume from it")

  def _diverged(self, error: DivergenceError) -> DivergenceError:
    self._finish_saves()
    last = self.mngr.latest_step() if self.mngr is not None else None   # none: it diverged at its first step
    last = f"step {last}" if last is not None else "none"
    return DivergenceError(None, f"{error.problem}; last good checkpoint: {last} in {self.workdir}.")

  def _write_failed(self, error: BaseException) -> WorkdirError:
    self._finish_saves()   # earlier saves still in flight complete (or fail) first
    last = checkpoints.steps(self.workdir)
    return WorkdirError("workdir", f"{self.workdir}: writing failed at step {self.step} "
                        f"({checkpoints.write_failure(error)}); last complete checkpoint: "
                        f"{f'step {last[-1]}' if last else 'none'}. Free space (or fix the directory) and run again "
                        "to resume from it")

  def _close_log(self, error: BaseException | None) -> BaseException | None:
    try:
      if self.log is not None:
        self.log.close()
    except OSError as e:   # a full disk fails the last flush too: one report is enough
      return error or self._write_failed(e)
    return error


def check_finite(step: int, metrics: dict[str, float], max_abs_loss: float) -> None:
  """Raises DivergenceError when a metric is not finite or |loss| exceeds the bound."""
  bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
  loss = metrics.get("loss", 0.0)
  if not bad and abs(loss) > max_abs_loss:
    bad = {"loss": loss}
  if bad:
    what = ", ".join(f"{k}={v:.4g}" for k, v in bad.items())
    raise DivergenceError(None, f"training diverged at step {step}: {what}")


@jax.jit
def _all_finite(state: State) -> jax.Array:
  leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(state)
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def check_state_finite(step: int, state: State) -> None:
  """Raises DivergenceError when any floating-point leaf of the state (params, optimizer state...) is not finite."""
  if not bool(_all_finite(state)):
    raise DivergenceError(None, f"training diverged at step {step}: the state holds non-finite values")


def open_log(workdir: Path, start: int, *, tensorboard: bool = True) -> writers.Writer:
  """The run's writer: metrics.jsonl (trimmed to `start` on a resume), TensorBoard events and PNG grids in the
  workdir. In a multi-process run only process 0 writes; the others get a writer that drops everything."""
  if jax.process_index() != 0:
    return writers.MultiWriter([])
  path = workdir / "metrics.jsonl"
  try:
    jsonl = writers.JsonlWriter(path, resume_step=start)
  except OSError as e:
    raise WorkdirError(None, f"{path}: cannot be written ({e.strerror or e}); make it a writable file (or remove "
                       "it) and run again") from None
  if jsonl.partial:
    print(f"{path}: dropped a half-written last line (a run killed while writing it)", file=sys.stderr)
  parts = [jsonl, writers.ImageFileWriter(workdir)]
  if tensorboard:
    try:   # steps > start are redone: TensorBoard hides the first run's events from start + 1 on
      parts.append(writers.TensorBoardWriter(workdir, purge_step=start + 1 if start else None))
    except ImportError:   # a side channel: metrics.jsonl has everything
      print("warning: tensorboardX is not installed, so no TensorBoard events are written (pip install tensorboardX)",
            file=sys.stderr)
  return writers.MultiWriter(parts)


def read_metrics(workdir: str | Path) -> list[dict]:
  """The rows of a run's metrics.jsonl, as `run` wrote them."""
  return writers.read_jsonl(Path(workdir) / "metrics.jsonl")


def metric(rows: list[dict], name: str) -> list[tuple[int, float]]:
  """[(step, value)] of one metric in read_metrics' rows."""
  return [(r["step"], r[name]) for r in rows if name in r]


def _is_images(v) -> bool:
  return getattr(v, "ndim", 0) == 4


def scalar_line(values: dict) -> str:
  """`k=v, ...` as the programs print an evaluation: 4 decimals, a count (`*_samples`) as the integer it is."""
  return ", ".join(f"{k}={int(v)}" if k.endswith("_samples") and float(v).is_integer() else f"{k}={v:.4f}"
                   for k, v in values.items())


def log_values(log: writers.Writer, step: int, values: dict) -> dict[str, float]:
  """Writes an action's result: image batches as grids, the rest as scalar metrics; returns the scalars."""
  images = {k: np.asarray(v) for k, v in values.items() if _is_images(v)}
  scalars = {k: float(v) for k, v in values.items() if not _is_images(v)}
  if images:
    log.write_images(step, images)
  if scalars:
    log.write_scalars(step, scalars)
  return scalars
