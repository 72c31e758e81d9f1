"""Where a run's metrics go: one interface, three writers, and their readers.

    writer = writers.MultiWriter([writers.JsonlWriter(workdir / "metrics.jsonl"),   # the source of truth
                                  writers.TensorBoardWriter(workdir),                # `tensorboard --logdir runs/`
                                  writers.ImageFileWriter(workdir)])                 # <name>_<step>.png
    writer.write_scalars(step, {"loss": 0.3})
    writer.write_images(step, {"samples": images_NHWC})   # values in [0, 1], tiled into one grid

TensorBoard event files are written with tensorboardX (a small library that needs neither TensorFlow nor the
tensorboard package; protobuf is its one heavy dependency) and read back by `read_tensorboard`, which parses
the TFRecord framing and the Event protos that tensorboardX ships.
"""

import contextlib
import errno
import json
import os
import struct
from pathlib import Path
from typing import Protocol

import numpy as np

from jaxtricks import images as image_grids


class Writer(Protocol):
  def write_scalars(self, step: int, scalars: dict[str, float]) -> None: ...
  def write_images(self, step: int, images: dict[str, np.ndarray]) -> None: ...
  def close(self) -> None: ...


class JsonlWriter:
  """metrics.jsonl: one JSON object per call, {"step": s, **scalars}, flushed at once.

  `resume_step`: on a resumed run, lines of steps after it (they are redone) and a half-written last line (what a
  kill mid-write leaves) are dropped first; `trimmed` says how many lines went, `partial` whether one was cut.
  A file deleted while the run writes it is an error (FileNotFoundError), not rows written to no file."""

  def __init__(self, path: str | Path, resume_step: int = 0):
    self.path = Path(path)
    self.trimmed, self.partial = 0, False
    if self.path.exists() or self.path.is_symlink():
      keep = []
      for line in self.path.read_text().splitlines():
        try:
          row = json.loads(line)
        except json.JSONDecodeError:
          self.partial = True
          continue
        if row.get("step", 0) <= resume_step:
          keep.append(line)
      self.trimmed = len(self.path.read_text().splitlines()) - len(keep)
      self.path.write_text("".join(l + "\n" for l in keep))
    self.file = self.path.open("a")

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    if os.fstat(self.file.fileno()).st_nlink == 0:   # unlinked: what is written now would be lost
      raise FileNotFoundError(errno.ENOENT, f"{self.path.name} was deleted while the run was writing it",
                              str(self.path))
    self.file.write(json.dumps({"step": step, **scalars}) + "\n")
    self.file.flush()

  def write_images(self, step: int, images: dict[str, np.ndarray]) -> None:
    pass

  def close(self) -> None:
    self.file.close()


class ImageFileWriter:
  """Each image batch as a PNG grid `<folder>/<name>_<step:06d>.png` (8 columns)."""

  def __init__(self, folder: str | Path, ncol: int = 8):
    self.folder, self.ncol = Path(folder), ncol

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    pass

  def write_images(self, step: int, images: dict[str, np.ndarray]) -> None:
    for name, x in images.items():
      image_grids.save_grid(x, self.folder / f"{name}_{step:06d}.png", ncol=self.ncol)

  def close(self) -> None:
    pass


class TensorBoardWriter:
  """TensorBoard event files in `logdir` (tensorboardX). `purge_step`: on a resumed run, TensorBoard hides the
  events of the first run from that step on (they are redone)."""

  def __init__(self, logdir: str | Path, purge_step: int | None = None, ncol: int = 8):
    from tensorboardX import SummaryWriter  # imported here: only runs that write events need it
    self.ncol = ncol
    # a run resumed within the same second would otherwise reuse, and overwrite, the first run's file name
    suffix = f".{purge_step or 0:09d}.{os.getpid()}"
    self.writer = SummaryWriter(str(logdir), purge_step=purge_step or None, flush_secs=10, filename_suffix=suffix)

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    for name, value in scalars.items():
      self.writer.add_scalar(name, value, step)

  def write_images(self, step: int, images: dict[str, np.ndarray]) -> None:
    for name, x in images.items():
      self.writer.add_image(name, image_grids.grid(x, ncol=self.ncol), step, dataformats="HWC")

  def close(self) -> None:
    try:
      self.writer.close()
    except OSError:   # its last flush failed (a full disk): the rest of tensorboardX's close, without flushing
      for file_writer in (self.writer.all_writers or {}).values():
        events = file_writer.event_writer
        events._worker.stop()   # pylint: disable=protected-access
        with contextlib.suppress(OSError):
          events._ev_writer.close()   # pylint: disable=protected-access  (the file is closed even when this raises)
        events._closed = True   # pylint: disable=protected-access  (so its exit hook does not flush again)
      raise


class MultiWriter:
  """Every call goes to each writer in turn; `close` closes each, then raises the first error (if any)."""

  def __init__(self, writers):
    self.writers = list(writers)

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    for w in self.writers:
      w.write_scalars(step, scalars)

  def write_images(self, step: int, images: dict[str, np.ndarray]) -> None:
    for w in self.writers:
      w.write_images(step, images)

  def close(self) -> None:
    errors = []
    for w in self.writers:
      try:
        w.close()
      except Exception as e:  # pylint: disable=broad-except  (the others are closed all the same)
        errors.append(e)
    if errors:
      raise errors[0]


def read_jsonl(path: str | Path) -> list[dict]:
  """The rows of a metrics.jsonl (a half-written last line is skipped)."""
  rows = []
  for line in Path(path).read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      pass
  return rows


def _records(path: Path):
  """The payloads of a TFRecord file: [uint64 length][uint32 crc][data][uint32 crc] each."""
  data = path.read_bytes()
  pos = 0
  while pos + 12 <= len(data):
    (length,) = struct.unpack("<Q", data[pos:pos + 8])
    start = pos + 12
    if start + length + 4 > len(data):   # cut short by a kill: the events before it stand
      return
    yield data[start:start + length]
    pos = start + length + 4


def read_tensorboard(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} of every scalar in the event files of `logdir` (images are left out), in the
  order written; with a resume's purge, the purged first-run events are dropped as TensorBoard drops them."""
  from tensorboardX.proto import event_pb2
  scalars: dict[str, list[tuple[int, float]]] = {}
  for path in sorted(Path(logdir).glob("events.out.tfevents.*")):
    for payload in _records(path):
      event = event_pb2.Event.FromString(payload)
      if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
        for tag in scalars:   # a purge: later events of earlier files are superseded
          scalars[tag] = [(s, v) for s, v in scalars[tag] if s < event.step]
      if not event.HasField("summary"):
        continue
      for value in event.summary.value:
        if value.HasField("simple_value"):
          scalars.setdefault(value.tag, []).append((int(event.step), float(value.simple_value)))
  return scalars
