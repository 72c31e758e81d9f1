"""`python tests/killed_run.py K ARGS...`: train.classify with ARGS that SIGKILLs itself after step K."""

import os
import signal
import sys

from jaxtricks import cli
from train import classify


def kill_at(k):
  def hook(step, state):
    if step == k:
      os.kill(os.getpid(), signal.SIGKILL)
  return hook


if __name__ == "__main__":
  hook = kill_at(int(sys.argv[1]))
  sys.exit(cli.main(classify.Config, lambda c: classify.run(c, hooks=[hook]), argv=sys.argv[2:]))
