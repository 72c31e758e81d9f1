"""Where raw data files come from: a local data dir, a system package, or the official URL.

Order, first that holds every file wins:
  1. the directory given as the `data_dir` setting (or, if that is not given, `$JAXTRICKS_DATA`): one
     sub-folder per data set (`mnist/`, `fashion_mnist/` or `fashion-mnist/`, `cifar10/`);
  2. system folders, e.g. Debian's `/usr/share/datasets/fashion-mnist/` (apt-get install dataset-fashion-mnist);
  3. the official URLs through TFDS's download manager, sha256 checked against `checksums.tsv`,
     tried only when the host answers (an offline machine fails in milliseconds, not minutes of retries)
     and $JAXTRICKS_OFFLINE is not set.
When none works the error names every place tried and how to fix it. Errors mention the setting as
`{data_dir}` (jaxtricks.errors), which a program renders as its flag.
"""

import dataclasses
import hashlib
import os
import socket
import urllib.parse
from pathlib import Path

from jaxtricks.errors import DataError

ENV_VAR = "JAXTRICKS_DATA"
OFFLINE_VAR = "JAXTRICKS_OFFLINE"   # set to 1 to never download (tests, clusters without egress)


@dataclasses.dataclass(frozen=True)
class RawSource:
  """The raw files of one data set and the places they may be found."""
  name: str
  files: dict[str, str]            # key -> file name, e.g. {"train_images": "train-images-idx3-ubyte.gz"}
  subdirs: tuple[str, ...]         # folder names inside a data dir
  system_dirs: tuple[str, ...] = ()
  url: str | None = None           # base URL of the official copy
  fix: str = ""                    # what to tell the user when nothing is found
  download_files: dict[str, str] | None = None   # files at `url` when they differ from the local ones (an archive)
  alternatives: tuple[dict[str, str], ...] = ()   # other file sets a local folder may hold instead of `files`


def _missing(folder: Path, files: dict[str, str]) -> list[str]:
  return [f for f in files.values() if not (folder / f).is_file()]


def _reachable(url: str, timeout: float = 5.0) -> str | None:
  """None if a TCP connection to the URL's host opens, else the reason it did not."""
  parts = urllib.parse.urlsplit(url)
  port = parts.port or (443 if parts.scheme == "https" else 80)
  try:
    socket.create_connection((parts.hostname, port), timeout=timeout).close()
    return None
  except OSError as e:
    return f"offline: {e.strerror or e}"


def locate(source: RawSource, data_dir: str | None, dl_manager=None) -> dict[str, Path]:
  """Returns {key: path} of the raw files, from the first place that has all of them."""
  tried = []
  folders = []
  if data_dir and Path(data_dir).exists() and not Path(data_dir).is_dir():
    raise DataError("data_dir", f"{data_dir}: is a file, not a folder; give the folder that holds "
                    f"{source.subdirs[0]}/")
  if data_dir and not Path(data_dir).is_dir():   # a typo must not silently fall back to another copy
    raise DataError("data_dir", f"{data_dir}: no such folder; give the folder that holds {source.subdirs[0]}/, or "
                    f"leave {{data_dir}} unset to use ${ENV_VAR}, the system copy or the download")
  if data_dir:
    folders += [(Path(data_dir) / s, "{data_dir}") for s in source.subdirs]
  elif os.environ.get(ENV_VAR):
    folders += [(Path(os.environ[ENV_VAR]) / s, f"${ENV_VAR}") for s in source.subdirs]
  else:
    tried.append(f"{{data_dir}} and ${ENV_VAR} (not set)")
  folders += [(Path(d), "system") for d in source.system_dirs]
  for folder, origin in folders:
    for files in (source.files, *source.alternatives):
      if not _missing(folder, files):
        return {k: folder / f for k, f in files.items()}
    missing = " or ".join(", ".join(_missing(folder, files)) for files in (source.files, *source.alternatives))
    what = "no such folder" if not folder.is_dir() else "missing " + missing
    tried.append(f"{folder} ({origin}: {what})")
  if source.url is not None and dl_manager is not None:
    urls = {k: urllib.parse.urljoin(source.url, f) for k, f in (source.download_files or source.files).items()}
    reason = f"${OFFLINE_VAR} is set" if os.environ.get(OFFLINE_VAR) else _reachable(source.url)
    if reason is None:
      try:
        return {k: Path(p) for k, p in dl_manager.download(urls).items()}
      except Exception as e:  # pylint: disable=broad-except  (network and checksum errors alike)
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    tried.append(f"{source.url} ({reason})")
  raise DataError(None, f"{source.name}: raw files not found. Tried: {'; '.join(tried)}. Fix: {source.fix}")


def local_key(source: RawSource, data_dir: str | None) -> str:
  """What the prepared cache of `source` is keyed by: the sha256 of the raw files found locally (the first 16 hex
  digits over all of them, in key order), or "official" when none is local (the download, whose sha256 is fixed
  by checksums.tsv). Raises DataError for a named data_dir that does not exist. Another copy of the raw files,
  or a changed one, so gets a cache of its own instead of silently reusing one built from other files."""
  try:
    paths = locate(source, data_dir, None)
  except DataError:
    if data_dir and not Path(data_dir).is_dir():
      raise
    return "official"
  digest = hashlib.sha256()
  for key in sorted(paths):
    h = hashlib.sha256()
    with open(paths[key], "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    digest.update(f"{key}={h.hexdigest()};".encode())
  return digest.hexdigest()[:16]
