"""`python tests/killed_run.py MODULE K ARGS...`: the trainer `train.MODULE` with ARGS, SIGKILLing itself right
after step K (a loop action, run after the step and after its checkpoint save, if any, has been started). With K
written `save:K`, the kill comes right after the checkpoint save of step K has been started, from inside the save
call: orbax is writing it in the background."""

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
  if sys.argv[2].startswith("save:"):
    kill_during_save(int(sys.argv[2][5:]))
  else:
    actions.append(kill_at(int(sys.argv[2])))
  sys.exit(cli.main(trainer.Config, lambda c: trainer.run(c, actions=actions), argv=sys.argv[3:]))
