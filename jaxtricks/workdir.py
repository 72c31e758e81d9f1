"""A run's folder: whether it may be used, the settings that define its run, and one run at a time.

    prepare(workdir, fingerprint)   # creates the folder; refuses a file, a foreign folder, a run of other settings
    with WorkdirLock(workdir):      # a lock on the folder itself: a second run exits naming the owner's pid
      write_config(workdir, fingerprint)   # (the loop: once the run's first step has succeeded)

The fingerprint is a dict of the settings that define a run's state (config.json, and each checkpoint's metadata:
jaxtricks.checkpoints). Errors are WorkdirError naming the setting `workdir`.
"""

import errno
import fcntl
import json
import os
from pathlib import Path
from typing import Any

import jax

from jaxtricks.errors import WorkdirError

_OURS = ("config.json", "checkpoints", "metrics.jsonl", ".lock")   # what makes a folder a workdir of ours


def prepare(workdir: Path, fingerprint: dict[str, Any]) -> None:
  """Creates the workdir folder, and nothing in it; refuses a file, a non-empty folder that is not a workdir of
  ours, an unreadable config.json and one that holds a run with a different fingerprint. (config.json is written by
  the loop, once the checkpoints' own settings have been checked and the run's first step has succeeded.)"""
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirError("workdir", f"{workdir}: is a file, not a directory; choose a directory")
  if (workdir / "weights.msgpack").exists():   # checkpoints.WEIGHTS: a pretrained model (benchmarks/pretrained/)
    raise WorkdirError("workdir", f"{workdir}: holds a pretrained model (weights.msgpack, no optimizer state): it "
                       "evaluates ({eval_only}) and samples, it does not train; train in another directory")
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


def write_json(path: Path, value: dict) -> None:
  """`value` as indented JSON, whole or absent (written beside, then renamed)."""
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(value, indent=1))
  tmp.replace(path)


def write_config(workdir: Path, fingerprint: dict) -> None:
  """<workdir>/config.json: the fingerprint of the run."""
  write_json(workdir / "config.json", fingerprint)


def compare_fingerprints(workdir: Path, saved: dict, fingerprint: dict) -> None:
  """WorkdirError naming each setting where `fingerprint` (compared as JSON reads it back) differs from `saved` (a
  setting `saved` lacks differs too; harness.fingerprint leaves out those a program added later)."""
  fingerprint = json.loads(json.dumps(fingerprint))
  diff = {k: (saved.get(k), v) for k, v in fingerprint.items() if saved.get(k) != v}
  if diff:
    what = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
    raise WorkdirError("workdir", f"{workdir} holds a run of another configuration ({what}); "
                       "use a new {workdir} or the same settings")


class WorkdirLock:
  """One run per workdir: an exclusive lock (fcntl.flock) on the workdir folder itself, so that a run holds it before
  it has written anything there (a new run writes nothing until its first step has succeeded); a second run exits
  naming the owner's pid (from /proc/locks, where there is one). The kernel drops the lock when its process dies,
  however it dies, so a killed run's lock is simply taken over, and no lock file is left behind.

  Where the file system refuses a lock on a folder (NFS emulates flock with POSIX locks, which need a file open for
  writing), the lock is taken on `<workdir>/.lock` instead, holding the owner's pid: that file is written before the
  first step, and stays."""

  def __init__(self, workdir: Path):
    self.workdir = workdir
    self.path = workdir / ".lock"   # the fall-back
    self.fd, self.file = None, None

  def __enter__(self):
    fd = os.open(self.workdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno in (errno.EAGAIN, errno.EACCES):
        raise self._busy(_flock_owner(self.workdir)) from None
      return self._lock_file()   # no lock on a folder here
    self.fd = fd
    return self

  def _busy(self, owner: str) -> WorkdirError:
    return WorkdirError("workdir", f"{self.workdir}: another run (pid {owner}) is using it; wait for it to end or "
                        "choose another {workdir}")

  def _lock_file(self):
    self.file = open(self.path, "a+")
    try:
      fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        raise
      self.file.seek(0)
      owner = self.file.read().strip() or "?"
      self.file.close()
      raise self._busy(owner) from None
    self.file.seek(0)
    self.file.truncate()
    self.file.write(f"{os.getpid()}\n")
    self.file.flush()
    return self

  def __exit__(self, *exc):
    if self.fd is not None:
      fcntl.flock(self.fd, fcntl.LOCK_UN)
      os.close(self.fd)
      self.fd = None
    elif self.file is not None:
      fcntl.flock(self.file, fcntl.LOCK_UN)
      self.file.close()
      self.file = None


def _flock_owner(path: Path) -> str:
  """The pid holding a flock on `path`, as /proc/locks lists it (Linux: "1: FLOCK ADVISORY WRITE <pid>
  <major>:<minor>:<inode> 0 EOF", device numbers in hex); "?" where it cannot be told."""
  try:
    st = os.stat(path)
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as f:
      for line in f:
        fields = line.split()
        if "->" not in fields and "FLOCK" in fields and where in fields:   # "->": a waiter, not the holder
          return fields[fields.index(where) - 1]
  except OSError:
    pass
  return "?"
