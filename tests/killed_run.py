"""`python tests/killed_run.py MODULE K ARGS...`: the trainer `train.MODULE` with ARGS, SIGKILLing itself right
after step K (before that step's checkpoint, if any, is saved)."""

import importlib
import os
import signal
import sys

from jaxtricks import cli


def kill_at(k):
  def hook(step, state):
    if step == k:
      os.kill(os.getpid(), signal.SIGKILL)
  return hook


if __name__ == "__main__":
  trainer = importlib.import_module(f"train.{sys.argv[1]}")
  hook = kill_at(int(sys.argv[2]))
  sys.exit(cli.main(trainer.Config, lambda c: trainer.run(c, hooks=[hook]), argv=sys.argv[3:]))
