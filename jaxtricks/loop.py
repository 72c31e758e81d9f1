"""The one training loop every `train.*` program uses.

    state = loop.run(config, init_fn=init, train_step=step, batches=batches, key=key, eval_fn=evaluate)

* `train_step(state, batch, key) -> (state, metrics)` is pure and already jitted; the loop passes
  `fold_in(key, step)` and never synchronizes on the step just dispatched: metrics are read one step late.
* Metrics go to `<workdir>/metrics.jsonl`, one JSON object per line with "step" (steps completed).
* Orbax checkpoints every `checkpoint_every` steps and at the end hold {state, key}; `state` is any pytree
  (params, optimizer state, step, batch stats, a replay buffer...). When the workdir already holds a
  checkpoint the run resumes from the latest one; the batch of step s depends only on (key, s), so a resumed
  run equals an uninterrupted one.
* Data parallel: with `state_sharding` (jaxtricks.parallel) the state is placed, and restored, with those
  shardings; in a multi-process run only process 0 writes metrics.jsonl and config.json, and every process
  takes part in orbax's saves.
* Divergence guard: a non-finite metric or |loss| > `max_abs_loss` stops the run with `DivergenceError`
  before anything is saved, so the last checkpoint on disk is the last good one.
"""

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import jax
import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

State = Any
Metrics = dict[str, jax.Array]


class DivergenceError(RuntimeError):
  """Training produced a non-finite or exploding metric; the last good checkpoint is kept."""


class WorkdirError(ValueError):
  """The workdir cannot be used: not writable, or it holds a run of a different configuration."""


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  steps: int
  workdir: str
  checkpoint_every: int = 1000
  eval_every: int = 0            # 0: only at the end
  max_abs_loss: float = 1e8      # JEM's bound
  keep_checkpoints: int = 2
  progress: bool = True
  progress_keys: tuple[str, ...] = ("loss", "accuracy")   # metrics shown on the progress bar
  divergence_advice: str = "Resume from it with a lower --lr"


def _to_host(metrics: Metrics) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def check_finite(step: int, metrics: dict[str, float], max_abs_loss: float) -> None:
  """Raises DivergenceError when a metric is not finite or |loss| exceeds the bound."""
  bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
  loss = metrics.get("loss", 0.0)
  if not bad and abs(loss) > max_abs_loss:
    bad = {"loss": loss}
  if bad:
    what = ", ".join(f"{k}={v:.4g}" for k, v in bad.items())
    raise DivergenceError(f"training diverged at step {step}: {what}")


class _Log:
  """Appends JSON lines to metrics.jsonl."""

  def __init__(self, path: Path, resume_step: int, write: bool = True):
    self.path, self.write_lines = path, write
    if not write:
      return
    if path.exists():   # drop lines of steps that are redone after a resume
      keep = [l for l in path.read_text().splitlines() if l and json.loads(l).get("step", 0) <= resume_step]
      path.write_text("".join(l + "\n" for l in keep))
    self.file = path.open("a")

  def write(self, step: int, values: dict[str, float]) -> None:
    if not self.write_lines:
      return
    self.file.write(json.dumps({"step": step, **values}) + "\n")
    self.file.flush()

  def close(self):
    if self.write_lines:
      self.file.close()


def _prepare_workdir(workdir: Path, fingerprint: dict[str, Any], write: bool = True) -> None:
  """Creates the workdir; refuses one that holds a run with a different fingerprint."""
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f".write_test.{jax.process_index()}.{os.getpid()}"   # one per process: they run at once
    probe.write_text("")
    probe.unlink()
  except OSError as e:
    raise WorkdirError(f"--workdir {workdir}: not writable ({e.strerror}); choose another directory") from None
  path = workdir / "config.json"
  fingerprint = json.loads(json.dumps(fingerprint))
  if path.exists():
    saved = json.loads(path.read_text())
    diff = {k: (saved.get(k), v) for k, v in fingerprint.items() if saved.get(k) != v}
    if diff:
      what = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
      raise WorkdirError(f"--workdir {workdir} holds a run of another configuration ({what}); "
                         "use a new --workdir or the same settings")
  elif write:
    path.write_text(json.dumps(fingerprint, indent=1))


def checkpoint_manager(workdir: str | Path, keep: int = 2) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      Path(workdir).absolute() / "checkpoints",
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def with_shardings(abstract_state: State, shardings) -> State:
  """ShapeDtypeStructs carrying `shardings` (a pytree prefix of the state), for restoring onto a mesh."""
  if shardings is None:
    return abstract_state
  return jax.tree.map(lambda sh, sub: jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), sub),
                      shardings, abstract_state, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))


def _restore_from(mngr: ocp.CheckpointManager, workdir, abstract_state: State, step: int, key_sharding=None):
  # leaves without a sharding go to the default device, whatever devices the checkpoint was saved from
  default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract_state = jax.tree.map(
      lambda s: s if getattr(s, "sharding", None) is not None else jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                                                        sharding=default),
      abstract_state)
  key_sharding = key_sharding or default
  abstract = {"state": abstract_state, "key": jax.ShapeDtypeStruct((2,), np.uint32, sharding=key_sharding)}
  try:
    tree = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  except (ValueError, KeyError, TypeError) as e:
    raise WorkdirError(f"{workdir}: checkpoint {step} does not fit this model "
                       f"({str(e).splitlines()[0][:200]}); use a new --workdir") from None
  return tree["state"], tree["key"]


def restore(workdir: str | Path, abstract_state: State, step: int | None = None) -> tuple[State, jax.Array, int]:
  """Returns (state, key, step) of a checkpoint in `workdir` (the latest if step is None)."""
  mngr = checkpoint_manager(workdir)
  try:
    step = mngr.latest_step() if step is None else step
    if step is None:
      raise WorkdirError(f"{workdir}: no checkpoint")
    state, key = _restore_from(mngr, workdir, abstract_state, step)
  finally:
    mngr.close()
  return state, key, step


def run(config: LoopConfig, *, init_fn: Callable[[], State],
        train_step: Callable[[State, Any, jax.Array], tuple[State, Metrics]],
        batches: Callable[[int], Any], key: jax.Array,
        eval_fn: Callable[[State], dict[str, Any]] | None = None,
        hooks: Iterable[Callable[[int, State], None]] = (),
        fingerprint: dict[str, Any] | None = None, state_sharding: Any = None) -> State:
  """Runs `config.steps` steps (resuming from the workdir's latest checkpoint) and returns the final state.

  `state_sharding`: None (leave the state where init_fn puts it) or a sharding / pytree prefix of shardings of
  the state (jaxtricks.parallel); the key is then replicated on the same mesh.
  """
  if config.steps <= 0:
    raise ValueError(f"steps must be positive, got {config.steps}")
  workdir = Path(config.workdir)
  _prepare_workdir(workdir, fingerprint or {}, write=jax.process_index() == 0)
  key = jax.numpy.asarray(key, dtype=np.uint32)
  key_sharding = None
  if state_sharding is not None:
    mesh = jax.tree.leaves(state_sharding, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))[0].mesh
    key_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  mngr = checkpoint_manager(workdir, config.keep_checkpoints)
  start = mngr.latest_step() or 0
  if start:
    try:
      state, key = _restore_from(mngr, workdir, with_shardings(jax.eval_shape(init_fn), state_sharding), start,
                                 key_sharding)
    except WorkdirError:
      mngr.close()
      raise
  else:
    state = init_fn()
    if state_sharding is not None:
      state, key = jax.device_put(state, state_sharding), jax.device_put(key, key_sharding)
  log = _Log(workdir / "metrics.jsonl", start, write=jax.process_index() == 0)
  bar = tqdm(total=config.steps, initial=start, disable=not config.progress, dynamic_ncols=True,
             desc=workdir.name, mininterval=0.5)
  pending: tuple[int, Metrics] | None = None
  t_last, step_last = time.perf_counter(), start

  def emit(step: int, metrics: Metrics) -> None:
    nonlocal t_last, step_last
    values = _to_host(metrics)
    check_finite(step, values, config.max_abs_loss)
    now = time.perf_counter()
    values["steps_per_sec"] = (step - step_last) / max(now - t_last, 1e-9)
    t_last, step_last = now, step
    log.write(step, values)
    bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if k in config.progress_keys}, refresh=False)

  step = start
  try:
    if start >= config.steps:
      bar.write(f"{workdir}: already at step {start} >= --steps {config.steps}; nothing to train")
    while step < config.steps:
      t0 = time.perf_counter()
      state, metrics = train_step(state, batches(step), jax.random.fold_in(key, step))
      if step == start:
        jax.block_until_ready(metrics)
        log.write(step + 1, {"first_step_s": time.perf_counter() - t0})
      if pending is not None:
        emit(*pending)
      pending = (step + 1, metrics)
      step += 1
      bar.update(1)
      for hook in hooks:
        hook(step, state)
      if step % config.checkpoint_every == 0 or step == config.steps:
        emit(*pending)   # a checkpoint is saved only after its step's metrics passed the guard
        pending = None
        mngr.save(step, args=ocp.args.StandardSave({"state": state, "key": key}))
      if eval_fn is not None and ((config.eval_every and step % config.eval_every == 0) or step == config.steps):
        values = {k: float(v) for k, v in eval_fn(state).items()}
        log.write(step, values)
        bar.write(f"step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in values.items()))
    if pending is not None:
      emit(*pending)
  except DivergenceError as e:
    mngr.wait_until_finished()
    last = mngr.latest_step()
    raise DivergenceError(
        f"{e}; last good checkpoint: {f'step {last}' if last is not None else 'none'} in {workdir}. "
        f"{config.divergence_advice}") from None
  except OSError as e:   # disk full, directory removed or made read-only while running
    try:
      mngr.wait_until_finished()   # earlier saves still in flight complete (or fail) first
    except OSError:
      pass
    last = _complete_steps(workdir)
    raise WorkdirError(
        f"--workdir {workdir}: writing failed at step {step} ({e.strerror or e}); last complete checkpoint: "
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
