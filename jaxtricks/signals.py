"""Stopping a run cleanly: SIGINT (Ctrl-C), and SIGTERM and SIGHUP, what SLURM, Kubernetes and TPU pods send
before they preempt a job.

    with StopRequests() as stop:
      while ...:
        train_step(...)
        if stop.signum:   # finish the step, save a checkpoint, exit 128 + stop.signum
          ...

The first of these signals asks to stop after the step in flight; a second one stops at once: KeyboardInterrupt
for SIGINT (as Python does), Interrupted for the others (errors.Interrupted carries the signal's number).
"""

import signal
import threading

from jaxtricks.errors import Interrupted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequests:
  """While active (main thread only; elsewhere signals cannot be caught), `signum` is the number of the first stop
  signal received, or 0. Set `closing` once the run is closing its files: later signals no longer interrupt it."""

  def __init__(self):
    self.signum, self.previous, self.closing = 0, {}, False

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      # `nohup` ignores SIGHUP: it stays ignored. (SIGINT and SIGTERM are always honoured: a shell script's
      # background job inherits an ignored SIGINT without asking for it.)
      self.previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS
                       if not (s == signal.SIGHUP and signal.getsignal(s) is signal.SIG_IGN)}
    return self

  def _handle(self, signum, frame):
    if not self.signum or self.closing:   # while the run closes its files, a further signal only waits its turn
      self.signum = self.signum or signum
    elif signum == signal.SIGINT:
      raise KeyboardInterrupt
    else:
      raise Interrupted(None, f"stopped at once by a second {signal.Signals(signum).name}", signum)

  def __exit__(self, *exc):
    for s, handler in self.previous.items():
      if handler is not None:   # None: a handler not set from Python, which cannot be put back
        signal.signal(s, handler)
