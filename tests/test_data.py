import socket

import numpy as np
import pytest
from conftest import make_cifar_folder, make_raw_folder, require_real_data

from jaxtricks import cli
from jaxtricks.data import DataError, load, read_idx_gz, sources, write_idx_gz
from jaxtricks.data.builders import FashionMnist


def test_idx_roundtrip(tmp_path):
  a = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
  write_idx_gz(tmp_path / "a.gz", a)
  np.testing.assert_array_equal(read_idx_gz(tmp_path / "a.gz", item_shape=(3, 5)), a)
  with pytest.raises(DataError, match=r"a.gz: items have shape \(3, 5\), expected \(28, 28\)"):
    read_idx_gz(tmp_path / "a.gz", item_shape=(28, 28))


def test_builder_reads_fake_folder_in_official_order(fake_data):
  raw, cache, arrays = fake_data
  for split in ("train", "test"):
    images, labels = load("fashion_mnist", split, data_dir=str(raw), tfds_dir=str(cache))
    assert images.shape == (len(arrays[f"{split}_labels"]), 28, 28, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[..., 0], arrays[f"{split}_images"])
    np.testing.assert_array_equal(labels, arrays[f"{split}_labels"])
  # prepared data is cached: a second load reads the arrays kept by the first, parsing no raw file and decoding
  # no example
  from jaxtricks.data import builders
  def no_parsing(*a, **k):
    raise AssertionError("parsed the raw files or decoded the examples again")
  monkey = pytest.MonkeyPatch()
  monkey.setattr(builders, "read_idx_gz", no_parsing)
  monkey.setattr(builders, "_decode", no_parsing)
  try:
    images, labels = load("fashion_mnist", "train", data_dir=str(raw), tfds_dir=str(cache))
  finally:
    monkey.undo()
  np.testing.assert_array_equal(images[..., 0], arrays["train_images"])
  np.testing.assert_array_equal(labels, arrays["train_labels"])
  assert labels.dtype == np.int32


def test_damaged_kept_arrays_are_decoded_anew(fake_data):
  """The arrays kept beside the prepared data are a copy: one damaged or of another size is replaced by decoding
  the examples again, never returned."""
  raw, cache, arrays = fake_data
  load("fashion_mnist", "test", data_dir=str(raw), tfds_dir=str(cache))
  kept, = cache.rglob("test.arrays.npz")
  for damage in (b"not a zip", None):
    if damage is None:   # a readable file of the wrong size
      np.savez(kept, images=np.zeros((3, 28, 28, 1), np.uint8), labels=np.zeros(3, np.int32))
    else:
      kept.write_bytes(damage)
    images, labels = load("fashion_mnist", "test", data_dir=str(raw), tfds_dir=str(cache))
    np.testing.assert_array_equal(images[..., 0], arrays["test_images"])
    np.testing.assert_array_equal(labels, arrays["test_labels"])
    with np.load(kept) as again:   # and the copy is whole again
      np.testing.assert_array_equal(again["images"], images)


def test_cache_is_keyed_by_the_raw_files(tmp_path):
  """Other raw files (another folder, or the same folder's files changed) are prepared anew, never served from a
  cache built from different files; a named folder that does not exist is an error even with a warm cache."""
  a = make_raw_folder(tmp_path / "a", seed=0)
  b = make_raw_folder(tmp_path / "b", seed=1)
  cache = str(tmp_path / "tfds")
  first, _ = load("fashion_mnist", "train", data_dir=str(tmp_path / "a"), tfds_dir=cache)
  second, _ = load("fashion_mnist", "train", data_dir=str(tmp_path / "b"), tfds_dir=cache)
  np.testing.assert_array_equal(first[..., 0], a["train_images"])
  np.testing.assert_array_equal(second[..., 0], b["train_images"])
  make_raw_folder(tmp_path / "a", seed=2)   # the same folder, new contents
  third, _ = load("fashion_mnist", "train", data_dir=str(tmp_path / "a"), tfds_dir=cache)
  assert not np.array_equal(third, first)
  with pytest.raises(DataError, match="no such folder"):
    load("fashion_mnist", "train", data_dir=str(tmp_path / "nowhere"), tfds_dir=cache)


def test_a_cache_prepared_by_another_process_while_this_one_waited_is_read(tmp_path, monkeypatch):
  """Two processes on a fresh machine (parallel test workers) open the same uncached data set: the second one's
  builder was made before the first finished preparing, finds the data there once it holds the lock, and must
  read its splits from disk rather than report none (seen: "mnist has no split 'train'; it has")."""
  from jaxtricks.data import builders
  arrays = make_raw_folder(tmp_path / "raw")
  real_prepare, raced = builders.prepare, []

  def prepare_after_the_other_process(b):
    if not raced:   # the other process takes the lock first and prepares the cache
      raced.append(True)
      monkeypatch.setattr(builders, "prepare", real_prepare)
      builders.builder("fashion_mnist", data_dir=str(tmp_path / "raw"), tfds_dir=str(tmp_path / "tfds"))
    real_prepare(b)

  monkeypatch.setattr(builders, "prepare", prepare_after_the_other_process)
  images, labels = load("fashion_mnist", "train", data_dir=str(tmp_path / "raw"), tfds_dir=str(tmp_path / "tfds"))
  assert raced and len(labels) == 256
  np.testing.assert_array_equal(images[..., 0], arrays["train_images"])


def test_data_dir_from_environment(fake_data, monkeypatch):
  raw, cache, arrays = fake_data
  monkeypatch.setenv("JAXTRICKS_DATA", str(raw))
  _, labels = load("fashion_mnist", "test", tfds_dir=str(cache))
  np.testing.assert_array_equal(labels, arrays["test_labels"])


def _truncate(path):
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])


def _corrupt(path):
  data = bytearray(path.read_bytes())
  for i in range(len(data) // 2, len(data) // 2 + 16):
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, words", [(_truncate, "truncated or corrupted"), (_corrupt, "truncated or corrupted")])
def test_damaged_file_error_names_the_file(tmp_path, damage, words):
  make_raw_folder(tmp_path / "raw", n_train=2000)
  bad = tmp_path / "raw" / "fashion_mnist" / "train-images-idx3-ubyte.gz"
  damage(bad)
  with pytest.raises(DataError) as e:
    load("fashion_mnist", "train", data_dir=str(tmp_path / "raw"), tfds_dir=str(tmp_path / "tfds"))
  assert str(bad) in str(e.value) and words in str(e.value)
  assert "\n" not in str(e.value)


def test_wrong_image_shape_is_refused(tmp_path):
  make_raw_folder(tmp_path / "raw", image_shape=(32, 32))
  with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: items have shape \(32, 32\)"):
    load("fashion_mnist", "train", data_dir=str(tmp_path / "raw"), tfds_dir=str(tmp_path / "tfds"))


def test_labels_images_count_mismatch(tmp_path):
  make_raw_folder(tmp_path / "raw")
  write_idx_gz(tmp_path / "raw" / "fashion_mnist" / "train-labels-idx1-ubyte.gz", np.zeros(10, np.uint8))
  with pytest.raises(DataError, match="256 images but .* 10 labels"):
    load("fashion_mnist", "train", data_dir=str(tmp_path / "raw"), tfds_dir=str(tmp_path / "tfds"))


class _FakeDownloads:
  def __init__(self, folder):
    self.folder, self.urls = folder, None

  def download(self, urls):
    self.urls = urls
    return {k: self.folder / u.rsplit("/", 1)[1] for k, u in urls.items()}


def _source(tmp_path, url):
  return sources.RawSource(name="toy", files=FashionMnist.SOURCE.files, subdirs=("toy",),
                           system_dirs=(str(tmp_path / "system"),), url=url, fix="install the toy")


def test_no_source_names_every_place_and_the_fix(tmp_path, monkeypatch):
  monkeypatch.delenv("JAXTRICKS_OFFLINE", raising=False)
  monkeypatch.delenv("JAXTRICKS_DATA", raising=False)
  with socket.socket() as s:   # a port nobody listens on: refused at once, as offline
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  dl = _FakeDownloads(tmp_path)
  (tmp_path / "mine").mkdir()   # exists, but without toy/
  with pytest.raises(DataError) as e:
    sources.locate(_source(tmp_path, f"http://127.0.0.1:{port}/"), str(tmp_path / "mine"), dl)
  msg = str(e.value)
  assert "\n" not in msg and dl.urls is None
  for place in (tmp_path / "mine" / "toy", tmp_path / "system", f"http://127.0.0.1:{port}/", "install the toy"):
    assert str(place) in msg, (place, msg)


def test_data_dir_that_does_not_exist_is_named_not_skipped(tmp_path):
  """A mistyped --data-dir is an error, not a silent fall-back to the system copy."""
  (tmp_path / "system").mkdir()
  source = _source(tmp_path, None)
  for f in source.files.values():
    (tmp_path / "system" / f).write_bytes(b"x")
  assert sources.locate(source, None, None)   # the system copy is there
  with pytest.raises(DataError, match=r"^data_dir .*/mistyped: no such folder") as e:
    sources.locate(source, str(tmp_path / "mistyped"), None)
  # the library names the setting; a program names its flag (jaxtricks.cli)
  assert e.value.setting == "data_dir"
  assert cli.message(e.value).startswith(f"--data-dir {tmp_path / 'mistyped'}: no such folder")
  assert "leave --data-dir unset" in cli.message(e.value)


def test_download_is_the_last_resort(tmp_path, monkeypatch):
  monkeypatch.delenv("JAXTRICKS_OFFLINE", raising=False)
  make_raw_folder(tmp_path / "server", name="files")
  with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    server.listen()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/toy/"
    dl = _FakeDownloads(tmp_path / "server" / "files")
    paths = sources.locate(_source(tmp_path, url), None, dl)
  assert dl.urls["train_images"] == url + "train-images-idx3-ubyte.gz"
  assert paths["test_labels"] == tmp_path / "server" / "files" / "t10k-labels-idx1-ubyte.gz"
  # a local folder wins over the download
  make_raw_folder(tmp_path / "system", name=".")
  dl.urls = None
  paths = sources.locate(_source(tmp_path, url), None, dl)
  assert dl.urls is None and paths["train_images"].parent == tmp_path / "system"


def test_offline_flag_skips_download(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXTRICKS_OFFLINE", "1")
  with pytest.raises(DataError, match=r"JAXTRICKS_OFFLINE is set"):
    sources.locate(_source(tmp_path, "http://127.0.0.1:1/"), None, _FakeDownloads(tmp_path))


FASHION_COUNTS = {"train": [6000] * 10, "test": [1000] * 10}
MNIST_COUNTS = {"train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
                "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]}


@pytest.mark.realdata
@pytest.mark.parametrize("name, counts", [("fashion_mnist", FASHION_COUNTS), ("mnist", MNIST_COUNTS)])
def test_real_data_sets(name, counts):
  require_real_data(name)
  for split, expected in counts.items():
    images, labels = load(name, split)
    assert images.shape == (sum(expected), 28, 28, 1) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == expected
    assert 0 < images.mean() < 255
  # the official order: the first training labels of each set
  _, labels = load(name, "train")
  first = {"fashion_mnist": [9, 0, 0, 3, 0, 2, 7, 2, 5, 5], "mnist": [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]}[name]
  assert labels[:10].tolist() == first


def test_cifar10_from_the_official_binary_archive_is_pixel_exact(tmp_path):
  arrays = make_cifar_folder(tmp_path / "raw", "binary", n_train=53, n_test=21)
  for split in ("train", "test"):
    images, labels = load("cifar10", split, data_dir=str(tmp_path / "raw"), tfds_dir=str(tmp_path / "tfds"))
    assert images.shape == (len(arrays[f"{split}_labels"]), 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, arrays[f"{split}_images"])    # the archive's order, pixel for pixel
    np.testing.assert_array_equal(labels, arrays[f"{split}_labels"])


def test_cifar10_from_the_jpeg_copy(tmp_path):
  arrays = make_cifar_folder(tmp_path / "raw", "jpeg", n_train=40, n_test=20)
  images, labels = load("cifar10", "train", data_dir=str(tmp_path / "raw"), tfds_dir=str(tmp_path / "tfds"))
  np.testing.assert_array_equal(labels, arrays["train_labels"])          # class by class, classes in official order
  assert np.abs(images.astype(int) - arrays["train_images"]).mean() < 3   # JPEG: close, not exact


def test_cifar10_damaged_archive_is_named(tmp_path):
  make_cifar_folder(tmp_path / "raw", "binary")
  path = tmp_path / "raw" / "cifar10" / "cifar-10-binary.tar.gz"
  path.write_bytes(path.read_bytes()[:200])
  with pytest.raises(DataError, match=r"cifar-10-binary.tar.gz: truncated or corrupted archive") as e:
    load("cifar10", "train", data_dir=str(tmp_path / "raw"), tfds_dir=str(tmp_path / "tfds"))
  assert "\n" not in str(e.value)


def test_cifar10_missing_names_both_archives(tmp_path):
  (tmp_path / "raw" / "cifar10").mkdir(parents=True)
  with pytest.raises(DataError, match="cifar-10-binary.tar.gz or cifar10_yoongikim_jpg.tar.gz"):
    load("cifar10", "train", data_dir=str(tmp_path / "raw"), tfds_dir=str(tmp_path / "tfds"))


@pytest.mark.realdata
def test_real_cifar10_jpeg_copy():
  require_real_data("cifar10")
  from jaxtricks.data import CIFAR10_CLASSES
  assert CIFAR10_CLASSES[0] == "airplane" and CIFAR10_CLASSES[9] == "truck"
  for split, n in (("train", 50000), ("test", 10000)):
    images, labels = load("cifar10", split)
    assert images.shape == (n, 32, 32, 3) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [n // 10] * 10
    assert 60 < images.mean() < 200


def test_kept_computes_once_then_reads_and_computes_again_what_it_cannot_read(tmp_path, monkeypatch):
  """data.kept: the array computed at the first call is read back at the next (compute not called), beside the
  prepared examples; a damaged or empty file, or one of another shape than asked, is computed and written again."""
  from pathlib import Path

  from jaxtricks.data import builder, kept
  make_raw_folder(tmp_path / "raw")
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  calls = []
  compute = lambda: calls.append(1) or np.arange(6, dtype=np.float32).reshape(2, 3)
  get = lambda: kept("fashion_mnist", "x.npz", compute, data_dir=str(tmp_path / "raw"))
  first, second = get(), get()
  assert len(calls) == 1 and second.dtype == np.float32
  np.testing.assert_array_equal(first, second)
  path = Path(builder("fashion_mnist", data_dir=str(tmp_path / "raw")).data_dir) / "x.npz"
  for damage in (b"half a file", b""):   # (an empty file: numpy's EOFError)
    path.write_bytes(damage)
    np.testing.assert_array_equal(get(), first)
  assert len(calls) == 3 and get().shape == (2, 3) and len(calls) == 3
  kept("fashion_mnist", "x.npz", compute, data_dir=str(tmp_path / "raw"), shape=(3, 2))   # not the shape asked
  assert len(calls) == 4 and not list(path.parent.glob(".x.npz.*"))                     # no temporary file left
