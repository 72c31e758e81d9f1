"""A run's checkpoints: orbax saves of {state, key} in <workdir>/checkpoints/<step>/, restored onto any devices.

    mngr = checkpoints.manager(workdir, keep=2)
    state, key, start = checkpoints.restore_or_init(mngr, workdir, init_fn, key)   # newest intact, or init_fn()
    checkpoints.save(mngr, step, state, key, fingerprint)                         # in the background
    checkpoints.close(mngr)                                                       # waits, with a deadline
    checkpoints.steps(workdir)                                                    # [2, 4]: the complete ones
    checkpoints.save_weights(folder, state, step)   # a pretrained model: the arrays but the optimizer's, one file
    state, step = checkpoints.restore_weights(folder, jax.eval_shape(init_fn))

A damaged checkpoint (unreadable metadata or data) is named on stderr, moved to <workdir>/damaged_checkpoints/ and
the newest intact one is used; an intact checkpoint of another model is refused (WorkdirError), never skipped.
Each checkpoint carries the run's fingerprint (jaxtricks.workdir) in its metadata.
"""

import contextlib
import errno
import logging
import os
import re
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from jaxtricks.errors import JaxtricksError, WorkdirError

State = Any

WEIGHTS = "weights.msgpack"   # a pretrained model's arrays (save_weights), beside its config.json
CLOSE_TIMEOUT_S = 600.0   # the longest wait for the saves in flight when a run ends (then it exits regardless)
THREADS_TIMEOUT_S = 10.0   # the longest wait for orbax's threads to stop after the manager closed


def manager(workdir: str | Path, keep: int = 2) -> ocp.CheckpointManager:
  """The orbax manager of <workdir>/checkpoints, keeping the newest `keep` checkpoints."""
  return ocp.CheckpointManager(
      Path(workdir).absolute() / "checkpoints", item_handlers=ocp.StandardCheckpointHandler(),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def steps(workdir: str | Path) -> list[int]:
  """The steps whose checkpoint is complete in <workdir>/checkpoints, ascending (orbax writes a checkpoint in a
  temporary folder and renames it to its step when whole; nothing is created)."""
  folder = Path(workdir) / "checkpoints"
  try:
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())
  except OSError:   # no folder, a file in its place, or one we may not read: no checkpoint we can use
    return []


def save(mngr: ocp.CheckpointManager, step: int, state: State, key: jax.Array, fingerprint: dict) -> None:
  """Starts saving {state, key} as checkpoint `step`, with the run's settings in its metadata."""
  mngr.save(step, args=ocp.args.StandardSave({"state": state, "key": key}), custom_metadata={"config": fingerprint})


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


def _restore_step(mngr: ocp.CheckpointManager, abstract_state: State | None, step: int, key_sharding=None):
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


def _move_aside(workdir: Path, step: int) -> Path:
  """Moves checkpoint `step` to <workdir>/damaged_checkpoints/ (a name not taken yet) and returns where."""
  target = workdir / "damaged_checkpoints" / f"{step}"
  target.parent.mkdir(exist_ok=True)
  while target.exists():
    target = target.with_name(target.name + "+")
  shutil.move(str(workdir / "checkpoints" / str(step)), str(target))
  return target


def _restore_newest_intact(mngr: ocp.CheckpointManager, workdir: Path, abstract_state: State | None,
                           key_sharding=None, move_damaged: bool = False):
  """(state, key, step) of the newest checkpoint that restores. A damaged one (unreadable metadata or data) is
  reported on stderr and skipped; with `move_damaged` it is moved to <workdir>/damaged_checkpoints/ (kept, not
  deleted) so that the run can save that step again. An intact checkpoint of another model is refused
  (WorkdirError) rather than skipped, and so is a workdir whose every checkpoint is damaged."""
  all_steps = sorted(mngr.all_steps(), reverse=True)
  damaged = []
  for step in all_steps:
    try:
      misfit = _misfit(mngr, step, abstract_state) if abstract_state is not None else None
      if misfit:
        raise WorkdirError("workdir", f"{workdir}: checkpoint {step} does not fit this model ({misfit[:200]}); "
                           "use a new {workdir}")
      state, key = _restore_step(mngr, abstract_state, step, key_sharding)
    except WorkdirError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (orbax and tensorstore raise many kinds on damage)
      damaged.append((step, f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"))
      continue
    for bad, why in damaged:
      where = f"; moved to {_move_aside(workdir, bad)}" if move_damaged and jax.process_index() == 0 else ""
      print(f"{workdir}: checkpoint {bad} is damaged ({why}){where}; resuming from step {step}, the newest intact "
            "one", file=sys.stderr)
    return state, key, step
  bad, why = damaged[0]
  raise WorkdirError("workdir", f"{workdir}: checkpoint {bad} is damaged ({why}) and no older one is intact "
                     f"(steps {', '.join(map(str, all_steps))}); move {workdir / 'checkpoints'} away to start over")


def restore(workdir: str | Path, abstract_state: State | None = None,
            step: int | None = None) -> tuple[State, jax.Array, int]:
  """Returns (state, key, step) of a checkpoint in `workdir`: `step`, or the newest intact one. Without
  `abstract_state` the state comes back as saved: nested dicts of arrays on the default device."""
  workdir = Path(workdir)
  mngr = manager(workdir)
  try:
    if step is not None:
      return (*_restore_step(mngr, abstract_state, step), step)
    if mngr.latest_step() is None:
      raise WorkdirError("workdir", f"{workdir}: no checkpoint")
    return _restore_newest_intact(mngr, workdir, abstract_state)
  finally:
    mngr.close()


def save_weights(folder: str | Path, state: State, step: int, *, half: bool = False) -> Path:
  """A trained state in the form of a pretrained model: every array of `state` but the optimizer's (its
  `opt_state`), with the step, as one msgpack file <folder>/weights.msgpack (flax.serialization), written whole or
  not at all. `state` a state dataclass or the nested dicts `restore` gives. Evaluating and sampling need no more;
  resuming training does (an orbax checkpoint holds the optimizer's moments too: 2-3x the size). With `half`, the
  float32 arrays are stored as float16 (half the bytes; restore_weights gives float32 back, rounded to float16's
  11-bit mantissa: a model's numbers move, by what its export measures)."""
  tree = serialization.to_state_dict(state)
  tree = jax.tree.map(np.asarray, {k: v for k, v in tree.items() if k != "opt_state"})
  if half:
    tree = jax.tree.map(lambda a: a.astype(np.float16) if a.dtype == np.float32 else a, tree)
  path = Path(folder) / WEIGHTS
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_bytes(serialization.msgpack_serialize({"step": int(step), "state": tree}))
  tmp.replace(path)
  return path


def restore_weights(folder: str | Path, abstract_state: State | None = None) -> tuple[State, int]:
  """(state, step) of <folder>/weights.msgpack (save_weights) in the structure of `abstract_state` (e.g.
  jax.eval_shape of the program's init): the stored arrays, as stored (a buffer may hold fewer items than the
  abstract one), and zeros for the optimizer's. A state to evaluate or sample from, not to resume training.
  Without `abstract_state`: the stored arrays as nested dicts, as `restore` gives a checkpoint without one."""
  path = Path(folder) / WEIGHTS
  try:
    saved = serialization.msgpack_restore(path.read_bytes())
  except OSError as e:
    raise WorkdirError("workdir", f"{path}: cannot be read ({e.strerror or e})") from None
  except Exception as e:  # pylint: disable=broad-except  (msgpack's errors for a damaged or foreign file)
    raise WorkdirError("workdir", f"{path}: not the weights of a pretrained model ({type(e).__name__})") from None
  saved["state"] = jax.tree.map(lambda a: np.asarray(a, np.float32) if np.asarray(a).dtype == np.float16 else a,
                                saved["state"])   # (save_weights' half)
  if abstract_state is None:
    return saved["state"], int(saved["step"])
  zeros = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract_state)
  target = serialization.to_state_dict(zeros)
  other = lambda why: WorkdirError("workdir", f"{path}: {why}; is it another program's or another setting's model?")
  if set(saved["state"]) != set(target) - {"opt_state"}:
    raise other(f"holds {sorted(saved['state'])}, this program's state {sorted(set(target) - {'opt_state'})}")
  want = {jax.tree_util.keystr(k): a.shape for k, a in jax.tree_util.tree_leaves_with_path(target)}
  for k, a in jax.tree_util.tree_leaves_with_path(saved["state"]):
    name = jax.tree_util.keystr(k)
    if name not in want or (np.shape(a) != want[name] and not name.startswith("['buffer']")):   # (a kept buffer)
      raise other(f"{name} is {np.shape(a)}, this program's {want.get(name, 'absent')}")
  try:
    return serialization.from_state_dict(zeros, {**target, **saved["state"]}), int(saved["step"])
  except (ValueError, KeyError, TypeError) as e:
    raise other(str(e).splitlines()[0][:160]) from None


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


def restore_or_init(mngr: ocp.CheckpointManager | None, workdir: Path, init_fn: Callable[[], State], key: jax.Array,
                    state_sharding: Any = None) -> tuple[State, jax.Array, int]:
  """(state, key, step to start from): the newest intact checkpoint's, or init_fn()'s and the given key at step
  0 (always so without a manager: a workdir with no checkpoints folder, which is not created here). With `state_sharding` (a sharding or pytree prefix of shardings) the state is placed, or restored, that way
  and the key replicated on the same mesh. Damaged checkpoints are moved aside (see _restore_newest_intact)."""
  key = jnp.asarray(key, dtype=np.uint32)
  key_sharding = None
  if state_sharding is not None:
    mesh = jax.tree.leaves(state_sharding, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))[0].mesh
    key_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  if mngr is not None and mngr.latest_step() is not None:
    abstract = with_shardings(jax.eval_shape(init_fn), state_sharding)
    return _restore_newest_intact(mngr, Path(workdir), abstract, key_sharding, move_damaged=True)
  state = init_once(init_fn, state_sharding)
  if state_sharding is not None:
    key = jax.device_put(key, key_sharding)
  return state, key, 0


# ---- failed writes, and closing without hanging

_TENSORSTORE_OS_ERROR = re.compile(r"\[os_error_code='(\d+)'\]")


def write_failure(error: BaseException | None) -> str | None:
  """Why writing failed, if `error` (or an error it was raised from) is a failed write: an OSError (its strerror),
  or tensorstore's ValueError naming one ("RESOURCE_EXHAUSTED: ... No space left on device [os_error_code='28']",
  "FAILED_PRECONDITION: ... Not a directory [os_error_code='20']"); else None."""
  seen = set()
  while error is not None and id(error) not in seen and not isinstance(error, JaxtricksError):   # ours: reported
    seen.add(id(error))
    if isinstance(error, OSError):
      return error.strerror or str(error)
    if isinstance(error, ValueError):
      code = _TENSORSTORE_OS_ERROR.search(str(error))
      if code:
        return os.strerror(int(code.group(1)))
      if "No space left on device" in str(error) or str(error).startswith("RESOURCE_EXHAUSTED"):
        return os.strerror(errno.ENOSPC)
    error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
  return None


class _DropWriteFailures(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno >= logging.ERROR and record.exc_info and write_failure(record.exc_info[1]))


def _drop_closed_event_loop_errors(hook):
  def unraisablehook(unraisable):
    if not (unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed"):
      hook(unraisable)
  unraisablehook.drops_closed_event_loop_errors = True
  return unraisablehook


@contextlib.contextmanager
def quiet_write_errors():
  """While active, the tracebacks that orbax, asyncio and tensorstore print for a failed write are dropped (orbax's
  and asyncio's logged errors whose exception is a failed write; tensorstore's callbacks that find orbax's event
  loops closed, reported through sys.unraisablehook): the caller reports the failure itself, in one line. When an
  error ends the block, the filters stay: the last of those reports may come until the process ends."""
  drop = _DropWriteFailures()
  loggers = [logging.getLogger(name) for name in ("absl", "asyncio")
             if not any(isinstance(f, _DropWriteFailures) for f in logging.getLogger(name).filters)]
  for logger in loggers:   # once per process: a filter left by an earlier failed run still serves
    logger.addFilter(drop)
  hook = sys.unraisablehook
  if not getattr(hook, "drops_closed_event_loop_errors", False):
    sys.unraisablehook = _drop_closed_event_loop_errors(hook)
  failed = True
  try:
    yield
    failed = False
  finally:
    if not failed:
      for logger in loggers:
        logger.removeFilter(drop)
      sys.unraisablehook = hook


def call_with_deadline(fn: Callable[[], None], timeout_s: float) -> BaseException | None:
  """Runs fn() in a daemon thread for at most timeout_s: its error, TimeoutError if it is still running, or None."""
  outcome: list[BaseException | None] = []

  def target():
    try:
      fn()
      outcome.append(None)
    except BaseException as e:  # pylint: disable=broad-except  (handed to the caller)
      outcome.append(e)
  thread = threading.Thread(target=target, name="close_checkpoints", daemon=True)
  thread.start()
  thread.join(timeout_s)
  return outcome[0] if outcome else TimeoutError(f"the checkpoint manager did not close within {timeout_s:.0f} s")


def _close_manager(mngr: ocp.CheckpointManager) -> None:
  error = None
  for close in (mngr.wait_until_finished, mngr.close):   # close after a failed wait: it waits, then closes the rest
    try:
      close()
    except Exception as e:  # pylint: disable=broad-except  (the first error is the one to report)
      error = error or e
  if error is not None:
    raise error


def _stop_orbax_threads(timeout_s: float) -> list[threading.Thread]:
  """Stops orbax's threads that still wait for a signal of a save that failed (they would wait 20 minutes, and the
  interpreter waits for them at exit): each is cancelled, then woken by the signal it waits for, so it returns
  without running. Returns the threads still alive after `timeout_s`."""
  try:
    if jax.process_count() > 1:   # orbax's signals go through the distributed store there: leave them alone
      raise ImportError
    from orbax.checkpoint._src.futures import future  # pylint: disable=import-outside-toplevel
    waiting = [t for t in threading.enumerate() if isinstance(t, future._SignalingThread) and t.is_alive()]
    for t in waiting:
      t.cancel()
    if waiting:   # the coroutines of the saves that never ran are collected at exit, with a warning each
      warnings.filterwarnings("ignore", r"coroutine '.*' was never awaited", RuntimeWarning)
    for t in waiting:
      future.set_signals(t._receive_signals, operation_id=t._operation_id)
  except (ImportError, AttributeError):   # another orbax: the last resort (exit_when_stuck) still holds
    waiting = [t for t in threading.enumerate() if "orbax" in type(t).__module__ and t.is_alive()]
  end = time.monotonic() + timeout_s
  for t in waiting:
    threading.Thread.join(t, max(0.0, end - time.monotonic()))
  return [t for t in waiting if t.is_alive()]


def close(mngr: ocp.CheckpointManager,
          timeout_s: float = CLOSE_TIMEOUT_S) -> tuple[BaseException | None, list[threading.Thread]]:
  """Waits (at most `timeout_s`) for the saves in flight, closes the manager and stops the orbax threads that a
  failed save left waiting. Returns (the error of a save that failed, or None; the threads that would not stop,
  for `exit_when_stuck`). Never hangs."""
  error = call_with_deadline(lambda: _close_manager(mngr), timeout_s)
  return error, _stop_orbax_threads(THREADS_TIMEOUT_S)


def exit_when_stuck(threads: list[threading.Thread], status: int) -> None:
  """The last resort for threads that would not stop: when the interpreter exits (before it joins its threads),
  they get THREADS_TIMEOUT_S more; if any still runs, stdout and stderr are flushed and the process ends at once
  with `status` (os._exit), instead of waiting for them forever."""
  def at_exit():
    end = time.monotonic() + THREADS_TIMEOUT_S
    for t in threads:
      threading.Thread.join(t, max(0.0, end - time.monotonic()))
    if any(t.is_alive() for t in threads):
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(status)   # pylint: disable=protected-access
  if threads:
    threading._register_atexit(at_exit)   # pylint: disable=protected-access  (runs before threads are joined)
