"""TFDS builders for the image data sets (array_record, no TensorFlow), and `load`.

Prepared data is cached in the TFDS data dir (`$TFDS_DATA_DIR`, default ~/tensorflow_datasets), so only the
first load parses the raw files (and decodes the prepared examples: later loads read the arrays kept beside
them). Each example keeps its index in the source file, and `load` returns that order.
Nothing is unpickled: MNIST-style data comes from IDX files, CIFAR-10 from the official *binary* archive (fixed
3,073-byte records) or a JPEG copy.
"""

import contextlib
import fcntl
import io
import os
import socket
import tarfile
from pathlib import Path
from typing import Callable

import chex
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from jaxtricks.data import sources
from jaxtricks.data.idx import read_idx_gz
from jaxtricks.errors import DataError

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


class _IdxImageBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """28x28 grey images and 10-class labels from four gzipped IDX files."""

  # 1.1.0: images stored as raw bytes (Encoding.BYTES), not as TFDS's default list of int64s per pixel, which took
  # most of a first load's time (CIFAR-10's JPEG copy: 39 s of a clean machine's first load)
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.1.0": "images as raw bytes", "1.0.0": "images as int64 lists"}
  SOURCE: sources.RawSource
  CLASS_NAMES: tuple[str, ...] = tuple(str(i) for i in range(10))
  IMAGE_SHAPE: tuple[int, int, int] = (28, 28, 1)

  def __init__(self, *, raw_data_dir: str | None = None, **kwargs):
    self._raw_data_dir = raw_data_dir
    super().__init__(**kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"{self.SOURCE.name}, read from the raw IDX files by jaxtricks.",
        features=tfds.features.FeaturesDict({
            "index": tfds.features.Scalar(dtype=np.int64),
            "image": tfds.features.Tensor(shape=self.IMAGE_SHAPE, dtype=np.uint8,
                                          encoding=tfds.features.Encoding.BYTES),
            "label": tfds.features.ClassLabel(names=self.CLASS_NAMES),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    paths = sources.locate(self.SOURCE, self._raw_data_dir, dl_manager)
    return {split: self._generate_examples(paths[f"{split}_images"], paths[f"{split}_labels"])
            for split in ("train", "test")}

  def _generate_examples(self, images_path, labels_path):
    images = read_idx_gz(images_path, item_shape=(28, 28))
    labels = read_idx_gz(labels_path, item_shape=())
    if len(images) != len(labels):
      raise DataError(None, f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels")
    if labels.size and labels.max() >= len(self.CLASS_NAMES):
      raise DataError(None, f"{labels_path}: label {labels.max()} is not one of {len(self.CLASS_NAMES)} classes")
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"index": i, "image": image[..., None], "label": int(label)}


class FashionMnist(_IdxImageBuilder):
  """Fashion-MNIST (Xiao et al. 2017), 60,000 train / 10,000 test."""
  name = "jaxtricks_fashion_mnist"
  CLASS_NAMES = FASHION_MNIST_CLASSES
  SOURCE = sources.RawSource(
      name="fashion_mnist",
      files=_IDX_FILES,
      subdirs=("fashion_mnist", "fashion-mnist"),
      system_dirs=("/usr/share/datasets/fashion-mnist",),
      url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
      fix="apt-get install -y dataset-fashion-mnist, or set JAXTRICKS_DATA=DIR (or {data_dir} DIR) "
          "with DIR/fashion_mnist/ holding the four IDX .gz files",
  )


class Mnist(_IdxImageBuilder):
  """MNIST (LeCun et al. 1998), 60,000 train / 10,000 test."""
  name = "jaxtricks_mnist"
  SOURCE = sources.RawSource(
      name="mnist",
      files=_IDX_FILES,
      subdirs=("mnist",),
      url="https://storage.googleapis.com/cvdf-datasets/mnist/",
      fix="set JAXTRICKS_DATA=DIR (or {data_dir} DIR) with DIR/mnist/ holding the four IDX .gz files",
  )


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR_RECORD = 1 + 32 * 32 * 3   # label byte, then the red, green and blue planes, 32 x 32 each, row-major


class Cifar10(_IdxImageBuilder):
  """CIFAR-10 (Krizhevsky 2009), 50,000 train / 10,000 test, 32x32x3, labels in the official class order.

  Sources, first found wins: `cifar-10-binary.tar.gz` (the official binary version: pixel-exact, official order;
  local or downloaded, sha256 in checksums.tsv), or `cifar10_yoongikim_jpg.tar.gz` ({train,test}/<class>/N.jpg,
  JPEG quality 75: not pixel-exact; order class by class, files by name). The official *python* version is a
  pickle; it is not read, because unpickling a downloaded file can run code."""
  name = "jaxtricks_cifar10"
  CLASS_NAMES = CIFAR10_CLASSES
  IMAGE_SHAPE = (32, 32, 3)
  SOURCE = sources.RawSource(
      name="cifar10",
      files={"binary": "cifar-10-binary.tar.gz"},
      alternatives=({"jpeg": "cifar10_yoongikim_jpg.tar.gz"},),
      subdirs=("cifar10", "cifar-10"),
      url="https://www.cs.toronto.edu/~kriz/",
      fix="set JAXTRICKS_DATA=DIR (or {data_dir} DIR) with DIR/cifar10/ holding cifar-10-binary.tar.gz "
          "(or the JPEG copy cifar10_yoongikim_jpg.tar.gz)",
  )

  def _split_generators(self, dl_manager):
    paths = sources.locate(self.SOURCE, self._raw_data_dir, dl_manager)
    read = cifar10_from_binary if "binary" in paths else cifar10_from_jpeg
    arrays = read(paths.get("binary", paths.get("jpeg")), ("train", "test"))   # one pass through the archive
    return {split: self._examples(*split_arrays) for split, split_arrays in arrays.items()}

  def _examples(self, images, labels):
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"index": i, "image": image, "label": int(label)}


def _open_tar(path):
  try:
    return tarfile.open(path, "r:gz")
  except (tarfile.TarError, OSError, EOFError) as e:
    raise DataError(None, f"{path}: truncated or corrupted archive ({e}); delete it and fetch it again") from None


_CIFAR_BATCHES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}


def cifar10_from_binary(path, splits: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{split: (images [N, 32, 32, 3] uint8, labels [N])} of the official binary archive, in its order; one pass
  through the archive for all `splits`, as cifar10_from_jpeg."""
  names = {name for split in splits for name in _CIFAR_BATCHES[split]}
  found = {}
  try:
    with _open_tar(path) as tar:
      for member in tar:
        base = member.name.rsplit("/", 1)[-1]
        if member.isfile() and base in names:
          found[base] = tar.extractfile(member).read()
  except (tarfile.TarError, OSError, EOFError) as e:
    raise DataError(None, f"{path}: truncated or corrupted archive ({e}); delete it and fetch it again") from None
  missing = sorted(names - set(found))
  if missing:
    raise DataError(None, f"{path}: lacks {', '.join(missing)}; is it cifar-10-binary.tar.gz?")
  return {split: _cifar10_records(path, split, b"".join(found[n] for n in _CIFAR_BATCHES[split])) for split in splits}


def _cifar10_records(path, split: str, raw: bytes) -> tuple[np.ndarray, np.ndarray]:
  """(images, labels) of one split's batches, concatenated: 3,073-byte records (a label byte, then the planes)."""
  if len(raw) % _CIFAR_RECORD:
    raise DataError(None, f"{path}: {split} batches hold {len(raw)} bytes, not a whole number of "
                          f"{_CIFAR_RECORD}-byte records")
  records = np.frombuffer(raw, np.uint8).reshape(-1, _CIFAR_RECORD)
  images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  if len(records) and records[:, 0].max() >= len(CIFAR10_CLASSES):
    raise DataError(None, f"{path}: {split} label {records[:, 0].max()} is not one of {len(CIFAR10_CLASSES)} classes")
  return images, records[:, 0].astype(np.int64)


def cifar10_from_jpeg(path, splits: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{split: (images, labels)} of the JPEG copy, <split>/<class>/<n>.jpg, class by class, n ascending; one pass
  through the archive for all `splits` (a gzip archive is read from its start: a pass per split took twice the
  time)."""
  found = {split: [] for split in splits}
  try:
    with _open_tar(path) as tar:
      for member in tar:
        parts = member.name.split("/")
        if member.isfile() and len(parts) == 3 and parts[0] in found and parts[2].endswith(".jpg"):
          if parts[1] not in CIFAR10_CLASSES:
            raise DataError(None, f"{path}: {member.name}: {parts[1]!r} is not a CIFAR-10 class")
          image = np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB"))
          if image.shape != (32, 32, 3):
            raise DataError(None, f"{path}: {member.name} has shape {image.shape}, expected (32, 32, 3)")
          found[parts[0]].append((CIFAR10_CLASSES.index(parts[1]), int(parts[2][:-4]), image))
  except (tarfile.TarError, OSError, EOFError) as e:
    raise DataError(None, f"{path}: truncated or corrupted archive ({e}); delete it and fetch it again") from None
  for split, items in found.items():
    if not items:
      raise DataError(None, f"{path}: no {split}/<class>/<n>.jpg files")
    items.sort(key=lambda t: t[:2])
  return {split: (np.stack([t[2] for t in items]), np.array([t[0] for t in items], np.int64))
          for split, items in found.items()}


BUILDERS = {"fashion_mnist": FashionMnist, "mnist": Mnist, "cifar10": Cifar10}
IMAGE_SHAPES = {name: b.IMAGE_SHAPE for name, b in BUILDERS.items()}


def builder(name: str, *, data_dir: str | None = None, tfds_dir: str | None = None, **kwargs):
  """The prepared builder of data set `name`; raw files from `data_dir` (see sources.py), cache in `tfds_dir`."""
  if name not in BUILDERS:
    raise DataError(None, f"unknown data set {name!r}; known: {', '.join(BUILDERS)}")
  cache = cache_dir(BUILDERS[name].SOURCE, data_dir, tfds_dir)
  make = lambda: BUILDERS[name](raw_data_dir=data_dir, data_dir=cache, file_format="array_record", **kwargs)
  with cache_damage_named(cache):   # reading a prepared cache; preparing one names its own errors
    b = make()
  prepare(b)
  if not b.info.splits:   # another process prepared the cache while this one waited for the lock: read it now
    with cache_damage_named(cache):
      b = make()
  return b


@contextlib.contextmanager
def cache_damage_named(cache: str):
  """An error of TFDS or ArrayRecord while reading a prepared cache (a damaged dataset_info.json, a truncated
  .array_record file...) becomes a DataError naming the cache folder to delete; the project's own errors and
  Ctrl-C pass through."""
  try:
    yield
  except (DataError, ImportError):
    raise
  except OSError as e:
    raise DataError(None, f"{cache}: the prepared data cache cannot be used ({e.strerror or e}: {e.filename}); free "
                    "space or fix its permissions, or delete that folder and run again") from None
  except Exception as e:  # pylint: disable=broad-except  (TFDS, protobuf and ArrayRecord raise many kinds)
    what = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
    raise DataError(None, f"{cache}: the prepared data cache is damaged ({what}); delete that folder and run again "
                    "(it is rebuilt from the raw files)") from None


def cache_dir(source: sources.RawSource, data_dir: str | None, tfds_dir: str | None) -> str:
  """Where the prepared data of `source` lives: `<TFDS data dir>/jaxtricks/<key>/`, keyed by the raw files it is
  built from (sources.local_key), so that other raw files rebuild it instead of reusing it."""
  root = Path(tfds_dir or os.environ.get("TFDS_DATA_DIR") or Path.home() / "tensorflow_datasets")   # read now
  return str(root / "jaxtricks" / sources.local_key(source, data_dir))


def prepare(b: tfds.core.DatasetBuilder) -> None:
  """b.download_and_prepare(), one process at a time per data set: two processes preparing the same cache at once
  (parallel test workers, several jobs on a fresh machine) would race on its final rename."""
  folder = Path(b.data_dir).parent
  try:
    folder.mkdir(parents=True, exist_ok=True)
    lock = open(folder / ".prepare.lock", "w")
  except OSError as e:
    if b.info.splits:   # prepared already (a shared, read-only cache): nothing to write, nothing to lock
      return
    raise DataError(None, f"{folder}: the prepared-data cache cannot be written there ({e.strerror or e}); set "
                    "TFDS_DATA_DIR to a writable folder (the default is ~/tensorflow_datasets)") from None
  with lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(force_checksums_validation=True))


def load(name: str, split: str, *, data_dir: str | None = None,
         tfds_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Returns (images_NHWC uint8, labels_N int32) of one split, in the source's order.

  The first load decodes the prepared examples one by one (TFDS without TensorFlow: 2.5 s for Fashion-MNIST's
  60,000) and keeps the arrays beside them (`<split>.arrays.npz`, written whole or not at all); later loads read
  that file. A rebuilt cache (other raw files) lives in another folder, so the arrays never outlive their data."""
  b = builder(name, data_dir=data_dir, tfds_dir=tfds_dir)
  if split not in b.info.splits:
    raise DataError(None, f"{name} has no split {split!r}; it has {', '.join(b.info.splits)}")
  n, shape = b.info.splits[split].num_examples, b.IMAGE_SHAPE
  arrays = Path(b.data_dir) / f"{split}.arrays.npz"
  held = _held(arrays, "images", "labels")
  images = labels = None
  if held and held["images"].shape == (n, *shape) and held["labels"].shape == (n,):
    images, labels = held["images"], held["labels"]
  if images is None:   # none kept yet, or not readable: decode anew
    with cache_damage_named(str(Path(b.data_dir).parents[1])):
      images, labels = _decode(b, split)
    _keep(arrays, images=images, labels=labels)
  chex.assert_shape(images, (n, *shape))
  chex.assert_type(images, np.uint8)
  chex.assert_shape(labels, (n,))
  return images, labels


def kept(name: str, filename: str, compute: Callable[[], np.ndarray], *, data_dir: str | None = None,
         shape: tuple[int, ...] | None = None) -> np.ndarray:
  """`compute()`'s array, kept beside data set `name`'s prepared examples as `filename` (.npz): read from there if
  it is (and of `shape`, where given), else computed and written (whole or not at all; a read-only cache goes
  without). A file that cannot be read for any reason (damaged, empty, another format) is computed anew. A name
  that holds a digest of what the array is computed by and from never goes stale, and a rebuilt data set lives in
  another folder."""
  path = Path(builder(name, data_dir=data_dir).data_dir) / filename
  held = _held(path, "array")
  if held and (shape is None or held["array"].shape == tuple(shape)):
    return held["array"]
  array = compute()
  _keep(path, array=array)
  return array


def _decode(b: tfds.core.DatasetBuilder, split: str) -> tuple[np.ndarray, np.ndarray]:
  source = b.as_data_source(split=split)
  examples = source.__getitems__(range(len(source)))
  order = np.argsort([ex["index"] for ex in examples])
  images = np.stack([examples[i]["image"] for i in order])
  labels = np.array([examples[i]["label"] for i in order], dtype=np.int32)
  return images, labels


def _held(path: Path, *names: str) -> dict[str, np.ndarray] | None:
  """The arrays `names` of the .npz file that _keep wrote at `path`, or None where it cannot be read for any reason
  (not there yet, damaged, empty, another format): a cache, whose fix is always to compute it again."""
  try:
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in names}
  except Exception:
    return None


def _keep(path: Path, **arrays: np.ndarray) -> None:
  """Writes `arrays` to `path` (.npz) through a temporary file and a rename (a concurrent reader sees all or
  nothing); a folder this process may not write to (a shared, read-only cache) just goes without."""
  tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")   # (a cache shared by hosts)
  try:
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())   # on disk before its name is: a crash leaves the old state, never an empty file
    os.replace(tmp, path)
  except BaseException as e:   # a failed write, or an interrupt (Ctrl-C) during it: no temporary file is left
    with contextlib.suppress(OSError):   # on a read-only file system even unlinking a missing file fails
      tmp.unlink(missing_ok=True)
    if not isinstance(e, OSError):
      raise
