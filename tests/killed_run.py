"""`python tests/killed_run.py MODULE K ARGS...`: the trainer `train.MODULE` with ARGS, SIGKILLing itself right
after step K (a loop action, run after the step and after its checkpoint save, if any, has been started). With K
written `save:K`, the kill comes right after the checkpoint save of step K has been started, from inside the save
call: orbax is writing it in the background. `sigint:K` sends SIGINT to itself after step K instead (twice with
`sigint2:K`; `sigterm:K`, `sighup:K` and `sigterm2:K` the same with SIGTERM and SIGHUP), and `sigint:compile`
sends it just before the first step, so that it arrives while XLA compiles. `checkpoints-file:K` moves
<workdir>/checkpoints aside after step K and puts a file in its place (every later save fails); `fill:K` fills the
file system of the workdir after step K (a file `<workdir>/../filler` grows until the disk is full).
The exit code is the program's own (cli.main's)."""

import importlib
import os
import signal
import sys
import time
from pathlib import Path

import orbax.checkpoint as ocp

from jaxtricks import cli, loop


def kill_at(k):
  def action(step, state):
    if step == k:
      os.kill(os.getpid(), signal.SIGKILL)
  return loop.Periodic(1, action, at_end=False)


def signal_at(k, signum, times=1):
  def action(step, state):
    if step == k:
      for _ in range(times):
        os.kill(os.getpid(), signum)
  return loop.Periodic(1, action, at_end=False)


def at_step(k, fn):
  return loop.Periodic(1, lambda step, state: fn() if step == k else None, at_end=False)


def saves_done(workdir):
  """Waits (up to a minute) until no checkpoint is being written: those before the fault stay whole."""
  for _ in range(600):
    if not any(p.name.endswith("-tmp") for p in (workdir / "checkpoints").iterdir()):
      return
    time.sleep(0.1)


def checkpoints_made_a_file(workdir):
  saves_done(workdir)
  (workdir / "checkpoints").rename(workdir / "checkpoints.moved")
  (workdir / "checkpoints").write_text("")


def fill_the_disk(workdir):
  saves_done(workdir)
  with open(workdir.parent / "filler", "wb") as f:
    try:
      while True:
        f.write(b"\0" * (1 << 16))
        f.flush()
    except OSError:
      pass


def sigint_during_compile():
  from jaxtricks import parallel
  jit_step = parallel.jit_step

  def patched(*args, **kwargs):
    step = jit_step(*args, **kwargs)
    calls = []

    def first_call_interrupted(*a):
      if not calls:
        calls.append(1)
        os.kill(os.getpid(), signal.SIGINT)   # pending while the first call compiles
      return step(*a)
    return first_call_interrupted
  parallel.jit_step = patched


def kill_during_save(k):
  save = ocp.CheckpointManager.save

  def save_then_die(self, step, *args, **kwargs):
    result = save(self, step, *args, **kwargs)
    if step == k:
      os.kill(os.getpid(), signal.SIGKILL)
    return result
  ocp.CheckpointManager.save = save_then_die


if __name__ == "__main__":
  trainer = importlib.import_module(f"train.{sys.argv[1]}")
  actions = []
  mode = sys.argv[2]
  if mode.startswith("save:"):
    kill_during_save(int(mode[5:]))
  elif mode == "sigint:compile":
    sigint_during_compile()
  elif mode.startswith(("sigint", "sigterm", "sighup")):
    name, k = mode.split(":")
    actions.append(signal_at(int(k), getattr(signal, name.rstrip("2").upper()), times=2 if name.endswith("2") else 1))
  elif mode.startswith(("checkpoints-file:", "fill:")):
    workdir = Path(sys.argv[sys.argv.index("--workdir") + 1])
    fn = checkpoints_made_a_file if mode.startswith("checkpoints-file") else fill_the_disk
    actions.append(at_step(int(mode.split(":")[1]), lambda: fn(workdir)))
  else:
    actions.append(kill_at(int(mode)))
  sys.exit(cli.main(trainer.Config, lambda c: trainer.run(c, actions=actions), argv=sys.argv[3:]))
