"""`python tests/killed_run.py MODULE K ARGS...`: the trainer `train.MODULE` with ARGS, SIGKILLing itself right
after step K (a loop action, run after the step and after its checkpoint save, if any, has been started). With K
written `save:K`, the kill comes right after the checkpoint save of step K has been started, from inside the save
call: orbax is writing it in the background. `sigint:K` sends SIGINT to itself after step K instead (twice with
`sigint2:K`), and `sigint:compile` sends it just before the first step, so that it arrives while XLA compiles.
The exit code is the program's own (cli.main's)."""

import importlib
import os
import signal
import sys

import orbax.checkpoint as ocp

from jaxtricks import cli, loop


def kill_at(k):
  def action(step, state):
    if step == k:
      os.kill(os.getpid(), signal.SIGKILL)
  return loop.Periodic(1, action, at_end=False)


def sigint_at(k, times=1):
  def action(step, state):
    if step == k:
      for _ in range(times):
        os.kill(os.getpid(), signal.SIGINT)
  return loop.Periodic(1, action, at_end=False)


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
  elif mode.startswith("sigint"):
    actions.append(sigint_at(int(mode.split(":")[1]), times=2 if mode.startswith("sigint2") else 1))
  else:
    actions.append(kill_at(int(mode)))
  sys.exit(cli.main(trainer.Config, lambda c: trainer.run(c, actions=actions), argv=sys.argv[3:]))
