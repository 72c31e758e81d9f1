"""The one training loop every `train.*` program uses, in parts that can be read and tested one by one.

    state = loop.run(config, init_fn=init, train_step=step, batches=batches, key=key,
                     actions=[loop.Periodic(every=1000, fn=evaluate)])

* `prepare_workdir` creates the workdir and refuses one that holds a run of another configuration.
* `restore_or_init` returns the state to start from: the workdir's latest checkpoint, or `init_fn()`.
* `open_log` writes metrics.jsonl (the source of truth), TensorBoard event files and PNG grids (jaxtricks.writers);
  `read_metrics` reads metrics.jsonl back.
* `Periodic` actions run every N steps and after the last one (evaluation, sample grids, any callback); what
  they return is logged: floats as metrics, image batches as grids.
* `check_finite` is the divergence guard: a non-finite metric or |loss| > `max_abs_loss` stops the run with
  DivergenceError before anything is saved, and so does a state with a non-finite value at a checkpoint, so the
  last checkpoint on disk is the last good one.
* `run` puts them together. `train_step(state, batch, key) -> (state, metrics)` is pure and already jitted; the
  loop passes `fold_in(key, step)` and never synchronizes on the step just dispatched: metrics are read one step
  late. Orbax checkpoints every `checkpoint_every` steps and at the end hold {state, key}; `state` is any pytree.
  The batch of step s depends only on (key, s), so a resumed run equals an uninterrupted one.
* Data parallel: with `state_sharding` (jaxtricks.parallel) the state is placed, and restored, with those
  shardings; in a multi-process run only process 0 writes metrics, events, PNGs and config.json, and every
  process takes part in orbax's saves.

Errors are jaxtricks.errors types naming the settings `workdir` and `steps`; the program words them as flags.
"""

import contextlib
import dataclasses
import errno
import fcntl
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from jaxtricks import writers
from jaxtricks.errors import ConfigError, DivergenceError, Interrupted, WorkdirError

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
  progress_keys: tuple[str, ...] = ("loss", "accuracy")   # metrics shown on the progress bar
  divergence_advice: str = "Resume from it with a lower {lr}"   # {name}: a setting (jaxtricks.errors)
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


_OURS = ("config.json", "checkpoints", "metrics.jsonl", ".lock")   # what makes a folder a workdir of ours


def prepare_workdir(workdir: Path, fingerprint: dict[str, Any]) -> None:
  """Creates the workdir; refuses a file, a non-empty folder that is not a workdir of ours, an unreadable
  config.json and one that holds a run with a different fingerprint. (config.json is written by run, once the
  checkpoints' own settings have been checked too.)"""
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirError("workdir", f"{workdir}: is a file, not a directory; choose a directory")
  if workdir.is_dir() and not any((workdir / name).exists() for name in _OURS):
    others = [p.name for p in workdir.iterdir() if not p.name.startswith(".write_test.")]
    if others:
      raise WorkdirError("workdir", f"{workdir}: not empty ({len(others)} entries, e.g. {sorted(others)[0]!r}) and not "
                         "a workdir of a jaxtricks run; choose a new or empty directory")
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f".write_test.{jax.process_index()}.{os.getpid()}"   # one per process: they run at once
    probe.write_text("")
    probe.unlink()
  except OSError as e:
    raise WorkdirError("workdir", f"{workdir}: not writable ({e.strerror}); choose another directory") from None
  path = workdir / "config.json"
  if path.exists():
    compare_fingerprints(workdir, read_config(path), fingerprint)


def read_config(path: Path) -> dict:
  """A workdir's config.json; WorkdirError naming it when it cannot be read as a JSON object."""
  try:
    saved = json.loads(path.read_text())
    if not isinstance(saved, dict):
      raise ValueError(f"a JSON {type(saved).__name__}, not an object")
  except (OSError, ValueError) as e:
    what = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:120]
    raise WorkdirError(None, f"{path}: not a readable config ({what}); restore it, or delete it to take the settings "
                       "from the latest checkpoint") from None
  return saved


def write_config(path: Path, fingerprint: dict) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(fingerprint, indent=1))
  tmp.replace(path)   # whole or absent


def compare_fingerprints(workdir: Path, saved: dict, fingerprint: dict) -> None:
  """WorkdirError naming each setting where `fingerprint` (compared as JSON reads it back) differs from `saved`."""
  fingerprint = json.loads(json.dumps(fingerprint))
  diff = {k: (saved.get(k), v) for k, v in fingerprint.items() if saved.get(k) != v}
  if diff:
    what = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
    raise WorkdirError("workdir", f"{workdir} holds a run of another configuration ({what}); "
                       "use a new {workdir} or the same settings")


class WorkdirLock:
  """One run per workdir: an exclusive lock on `<workdir>/.lock` (fcntl.flock) holding the owner's pid. The
  kernel drops the lock when its process dies, however it dies, so a killed run's lock is simply taken over."""

  def __init__(self, workdir: Path):
    self.path = workdir / ".lock"
    self.file = None

  def __enter__(self):
    self.file = open(self.path, "a+")
    try:
      fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        raise
      self.file.seek(0)
      owner = self.file.read().strip() or "?"
      self.file.close()
      raise WorkdirError("workdir", f"{self.path.parent}: another run (pid {owner}) is using it; wait for it to end "
                         "or choose another {workdir}") from None
    self.file.seek(0)
    self.file.truncate()
    self.file.write(f"{os.getpid()}\n")
    self.file.flush()
    return self

  def __exit__(self, *exc):
    fcntl.flock(self.file, fcntl.LOCK_UN)
    self.file.close()


def checkpoint_manager(workdir: str | Path, keep: int = 2) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      Path(workdir).absolute() / "checkpoints", item_handlers=ocp.StandardCheckpointHandler(),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def with_shardings(abstract_state: State, shardings) -> State:
  """ShapeDtypeStructs carrying `shardings` (a pytree prefix of the state), for restoring onto a mesh."""
  if shardings is None:
    return abstract_state
  return jax.tree.map(lambda sh, sub: jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), sub),
                      shardings, abstract_state, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))


def _on_default_device(abstract: State) -> State:
  # leaves without a sharding go to the default device, whatever devices the checkpoint was saved from
  default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(
      lambda s: s if getattr(s, "sharding", None) is not None else jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                                                        sharding=default),
      abstract)


def _restore_from(mngr: ocp.CheckpointManager, workdir, abstract_state: State | None, step: int, key_sharding=None):
  if abstract_state is None:   # as saved: plain arrays on the default device, laid out by the checkpoint's metadata
    tree = mngr.item_metadata(step).tree
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree)
  else:
    key = jax.ShapeDtypeStruct((2,), np.uint32, sharding=key_sharding)
    abstract = {"state": abstract_state, "key": key}
  tree = mngr.restore(step, args=ocp.args.StandardRestore(_on_default_device(abstract)))
  return tree["state"], tree["key"]


def _leaf_table(tree) -> dict[str, tuple]:
  """{path: (shape, dtype)} of a pytree of arrays, ShapeDtypeStructs or orbax ArrayMetadata, with dict keys,
  attribute names and sequence indices all written alike (a dataclass state saves as a dict of its fields)."""
  name = lambda k: str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(name(k) for k in path): (tuple(leaf.shape), np.dtype(leaf.dtype).name) for path, leaf in leaves}


def _misfit(mngr: ocp.CheckpointManager, step: int, abstract_state: State) -> str | None:
  """Why an intact checkpoint does not fit `abstract_state` (None if it fits); OSError/ValueError if its metadata
  cannot be read (the checkpoint is damaged)."""
  saved = _leaf_table(mngr.item_metadata(step).tree["state"])
  want = _leaf_table(abstract_state)
  if saved == want:
    return None
  for k in sorted(set(saved) | set(want)):
    if saved.get(k) != want.get(k):
      return f"{k}: {saved.get(k, 'absent')} there, {want.get(k, 'absent')} here"
  return "different structure"


def _restore_newest_intact(mngr: ocp.CheckpointManager, workdir: Path, abstract_state: State | None,
                           key_sharding=None, move_damaged: bool = False):
  """(state, key, step) of the newest checkpoint that restores. A damaged one (unreadable metadata or data) is
  reported on stderr and skipped; with `move_damaged` it is moved to <workdir>/damaged_checkpoints/ (kept, not
  deleted) so that the run can save that step again. An intact checkpoint of another model is refused
  (WorkdirError) rather than skipped, and so is a workdir whose every checkpoint is damaged."""
  steps = sorted(mngr.all_steps(), reverse=True)
  damaged = []
  for step in steps:
    try:
      if abstract_state is not None:
        misfit = _misfit(mngr, step, abstract_state)
        if misfit:
          raise WorkdirError("workdir", f"{workdir}: checkpoint {step} does not fit this model ({misfit[:200]}); "
                             "use a new {workdir}")
      state, key = _restore_from(mngr, workdir, abstract_state, step, key_sharding)
    except WorkdirError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (orbax and tensorstore raise many kinds on damage)
      damaged.append((step, f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"))
      continue
    for bad, why in damaged:
      where = ""
      if move_damaged and jax.process_index() == 0:
        target = workdir / "damaged_checkpoints" / f"{bad}"
        target.parent.mkdir(exist_ok=True)
        while target.exists():
          target = target.with_name(target.name + "+")
        shutil.move(str(workdir / "checkpoints" / str(bad)), str(target))
        where = f"; moved to {target}"
      print(f"{workdir}: checkpoint {bad} is damaged ({why}){where}; resuming from step {step}, the newest intact "
            "one", file=sys.stderr)
    return state, key, step
  bad, why = damaged[0]
  raise WorkdirError("workdir", f"{workdir}: checkpoint {bad} is damaged ({why}) and no older one is intact "
                     f"(steps {', '.join(map(str, steps))}); move {workdir / 'checkpoints'} away to start over")


def restore(workdir: str | Path, abstract_state: State | None = None,
            step: int | None = None) -> tuple[State, jax.Array, int]:
  """Returns (state, key, step) of a checkpoint in `workdir`: `step`, or the newest intact one. Without
  `abstract_state` the state comes back as saved: nested dicts of arrays on the default device."""
  workdir = Path(workdir)
  mngr = checkpoint_manager(workdir)
  try:
    if step is not None:
      return (*_restore_from(mngr, workdir, abstract_state, step), step)
    if mngr.latest_step() is None:
      raise WorkdirError("workdir", f"{workdir}: no checkpoint")
    return _restore_newest_intact(mngr, workdir, abstract_state)
  finally:
    mngr.close()


def saved_config(mngr: ocp.CheckpointManager, step: int) -> dict | None:
  """The settings that defined the run, as saved with checkpoint `step` (None for a checkpoint without them)."""
  try:
    return (mngr.metadata(step).custom_metadata or {}).get("config")
  except Exception:  # pylint: disable=broad-except  (a damaged checkpoint: restoring it will say so)
    return None


def init_once(init_fn: Callable[[], State], out_shardings: Any = None) -> State:
  """init_fn() as one compiled program (placed by `out_shardings`, if given): an eager init compiles each of its
  hundreds of small ops alone (seconds per start). XLA's default optimization level on purpose: a lower LLVM level
  compiles an init 2.5-4x faster but changes the last bit of some initial weights (measured 2026-12-02), and runs
  must reproduce the results made with an eager init."""
  return jax.jit(init_fn, **({"out_shardings": out_shardings} if out_shardings is not None else {}))()


def restore_or_init(mngr: ocp.CheckpointManager, workdir: Path, init_fn: Callable[[], State], key: jax.Array,
                    state_sharding: Any = None) -> tuple[State, jax.Array, int]:
  """(state, key, step to start from): the newest intact checkpoint's, or init_fn()'s and the given key at step
  0. With `state_sharding` (a sharding or pytree prefix of shardings) the state is placed, or restored, that way
  and the key replicated on the same mesh. Damaged checkpoints are moved aside (see _restore_newest_intact)."""
  key = jnp.asarray(key, dtype=np.uint32)
  key_sharding = None
  if state_sharding is not None:
    mesh = jax.tree.leaves(state_sharding, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))[0].mesh
    key_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  if mngr.latest_step() is not None:
    abstract = with_shardings(jax.eval_shape(init_fn), state_sharding)
    return _restore_newest_intact(mngr, workdir, abstract, key_sharding, move_damaged=True)
  state = init_once(init_fn, state_sharding)
  if state_sharding is not None:
    key = jax.device_put(key, key_sharding)
  return state, key, 0


class _SigintFlag:
  """While active (main thread only): the first SIGINT asks the loop to stop after the step in flight, with a
  checkpoint; a second one stops at once (KeyboardInterrupt)."""

  def __init__(self):
    self.requested, self.previous = False, None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self.previous = signal.signal(signal.SIGINT, self._handle)
    return self

  def _handle(self, signum, frame):
    if self.requested:
      raise KeyboardInterrupt
    self.requested = True

  def __exit__(self, *exc):
    if self.previous is not None:
      signal.signal(signal.SIGINT, self.previous)


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


def log_values(log: writers.Writer, step: int, values: dict) -> dict[str, float]:
  """Writes an action's result: image batches as grids, the rest as scalar metrics; returns the scalars."""
  images = {k: np.asarray(v) for k, v in values.items() if _is_images(v)}
  scalars = {k: float(v) for k, v in values.items() if not _is_images(v)}
  if images:
    log.write_images(step, images)
  if scalars:
    log.write_scalars(step, scalars)
  return scalars


def run(config: LoopConfig, *, init_fn: Callable[[], State],
        train_step: Callable[[State, Any, jax.Array], tuple[State, Metrics]],
        batches: Callable[[int], Any], key: jax.Array, actions: Iterable[Periodic] = (),
        fingerprint: dict[str, Any] | None = None, state_sharding: Any = None) -> State:
  """Runs `config.steps` steps (resuming from the workdir's newest intact checkpoint) and returns the final state.
  One run per workdir at a time (WorkdirLock, process 0); SIGINT stops after the step in flight with a checkpoint
  (Interrupted)."""
  if config.steps <= 0:
    raise ConfigError("steps", f"must be positive, got {config.steps}")
  workdir = Path(config.workdir)
  fingerprint = json.loads(json.dumps(fingerprint or {}))
  prepare_workdir(workdir, fingerprint)
  lock = WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  with lock, _SigintFlag() as sigint:
    return _run_locked(config, workdir, fingerprint, sigint, init_fn=init_fn, train_step=train_step,
                       batches=batches, key=key, actions=list(actions), state_sharding=state_sharding)


def _run_locked(config: LoopConfig, workdir: Path, fingerprint: dict, sigint: _SigintFlag, *, init_fn, train_step,
                batches, key, actions, state_sharding) -> State:
  mngr = checkpoint_manager(workdir, config.keep_checkpoints)
  try:
    latest = mngr.latest_step()
    if latest is not None:   # the settings travel with each checkpoint: a missing config.json hides nothing
      saved = saved_config(mngr, latest)
      if saved is not None:
        compare_fingerprints(workdir, saved, fingerprint)
    if jax.process_index() == 0 and not (workdir / "config.json").exists():
      write_config(workdir / "config.json", fingerprint)
    state, key, start = restore_or_init(mngr, workdir, init_fn, key, state_sharding)
    if start != latest and latest is not None:   # damaged checkpoints were moved aside
      mngr.close()
      mngr = checkpoint_manager(workdir, config.keep_checkpoints)
    log = open_log(workdir, start, tensorboard=config.tensorboard)
  except BaseException:
    mngr.close()
    raise
  bar = tqdm(total=config.steps, initial=start, disable=not config.progress, dynamic_ncols=True,
             desc=workdir.name, mininterval=0.5)
  pending: tuple[int, Metrics] | None = None
  t_last, step_last = time.perf_counter(), start

  def emit(step: int, metrics: Metrics) -> None:
    nonlocal t_last, step_last
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    check_finite(step, values, config.max_abs_loss)
    now = time.perf_counter()
    values["steps_per_sec"] = (step - step_last) / max(now - t_last, 1e-9)
    t_last, step_last = now, step
    log.write_scalars(step, values)
    bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if k in config.progress_keys}, refresh=False)

  def save(step: int) -> None:   # a checkpoint only of a state whose step's metrics and values passed the guard
    check_state_finite(step, state)
    mngr.save(step, args=ocp.args.StandardSave({"state": state, "key": key}), custom_metadata={"config": fingerprint})

  step = start
  try:
    if start >= config.steps:
      print(f"{workdir}: already at step {start} >= the {config.steps} steps asked for; nothing to train",
            file=sys.stderr)
    while step < config.steps:
      t0 = time.perf_counter()
      state, metrics = train_step(state, batches(step), jax.random.fold_in(key, step))
      if step == start:
        jax.block_until_ready(metrics)
        log.write_scalars(step + 1, {"first_step_s": time.perf_counter() - t0})
      if pending is not None:
        emit(*pending)
      pending = (step + 1, metrics)
      step += 1
      bar.update(1)
      due = step % config.checkpoint_every == 0 or step == config.steps
      if due or sigint.requested:
        emit(*pending)
        pending = None
        save(step)
      if sigint.requested:
        mngr.wait_until_finished()
        raise Interrupted(None, f"interrupted at step {step}; checkpoint saved: step {step} in {workdir}. Run the same "
                          "command again to resume")
      for action in actions:
        if action.due(step, config.steps):
          scalars = log_values(log, step, action.fn(step, state) or {})
          if action.announce and scalars:
            bar.write(f"step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in scalars.items()))
    if pending is not None:
      emit(*pending)
  except DivergenceError as e:
    mngr.wait_until_finished()
    last = mngr.latest_step()
    raise DivergenceError(
        None, f"{e.problem}; last good checkpoint: {f'step {last}' if last is not None else 'none'} in {workdir}. "
        f"{config.divergence_advice}") from None
  except OSError as e:   # disk full, directory removed or made read-only while running
    try:
      mngr.wait_until_finished()   # earlier saves still in flight complete (or fail) first
    except OSError:
      pass
    last = _complete_steps(workdir)
    raise WorkdirError(
        "workdir", f"{workdir}: writing failed at step {step} ({e.strerror or e}); last complete checkpoint: "
        f"{f'step {last[-1]}' if last else 'none'}. Free space (or fix the directory) and run again to resume "
        "from it") from None
  finally:
    bar.close()
    try:
      mngr.wait_until_finished()
      mngr.close()
    except OSError:
      pass   # reported above; orbax leaves an unfinished save in a temporary directory, never as a step
    log.close()
  return state


def _complete_steps(workdir: Path) -> list[int]:
  """Steps whose checkpoint orbax finished (a save cut short stays in a temporary directory)."""
  folder = workdir / "checkpoints"
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []
