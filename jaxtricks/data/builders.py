"""TFDS builders for the image data sets (array_record, no TensorFlow), and `load`.

Prepared data is cached in the TFDS data dir (`$TFDS_DATA_DIR`, default ~/tensorflow_datasets), so only the
first load parses the raw files. Each example keeps its index in the official file, and `load` returns the
official order.
"""

import os

import chex
import numpy as np
import tensorflow_datasets as tfds

from jaxtricks.data import sources
from jaxtricks.data.idx import DataError, read_idx_gz

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

  VERSION = tfds.core.Version("1.0.0")
  SOURCE: sources.RawSource
  CLASS_NAMES: tuple[str, ...] = tuple(str(i) for i in range(10))

  def __init__(self, *, raw_data_dir: str | None = None, **kwargs):
    self._raw_data_dir = raw_data_dir
    super().__init__(**kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"{self.SOURCE.name}, read from the raw IDX files by jaxtricks.",
        features=tfds.features.FeaturesDict({
            "index": tfds.features.Scalar(dtype=np.int64),
            "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
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
      raise DataError(f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels")
    if labels.size and labels.max() >= len(self.CLASS_NAMES):
      raise DataError(f"{labels_path}: label {labels.max()} is not one of {len(self.CLASS_NAMES)} classes")
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
      fix="apt-get install -y dataset-fashion-mnist, or set JAXTRICKS_DATA=DIR (or --data-dir DIR) "
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
      fix="set JAXTRICKS_DATA=DIR (or --data-dir DIR) with DIR/mnist/ holding the four IDX .gz files, "
          "e.g. JAXTRICKS_DATA=../shared/data",
  )


BUILDERS = {"fashion_mnist": FashionMnist, "mnist": Mnist}


def builder(name: str, *, data_dir: str | None = None, tfds_dir: str | None = None, **kwargs):
  """The prepared builder of data set `name`; raw files from `data_dir` (see sources.py), cache in `tfds_dir`."""
  if name not in BUILDERS:
    raise DataError(f"unknown data set {name!r}; known: {', '.join(BUILDERS)}")
  tfds_dir = tfds_dir or os.environ.get("TFDS_DATA_DIR")   # read now, not at import
  b = BUILDERS[name](raw_data_dir=data_dir, data_dir=tfds_dir, file_format="array_record", **kwargs)
  b.download_and_prepare(
      download_config=tfds.download.DownloadConfig(force_checksums_validation=True))
  return b


def load(name: str, split: str, *, data_dir: str | None = None,
         tfds_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Returns (images_NHWC uint8, labels_N int32) of one split, in the official order."""
  b = builder(name, data_dir=data_dir, tfds_dir=tfds_dir)
  if split not in b.info.splits:
    raise DataError(f"{name} has no split {split!r}; it has {', '.join(b.info.splits)}")
  source = b.as_data_source(split=split)
  examples = source.__getitems__(range(len(source)))
  order = np.argsort([ex["index"] for ex in examples])
  images = np.stack([examples[i]["image"] for i in order])
  labels = np.array([examples[i]["label"] for i in order], dtype=np.int32)
  chex.assert_shape(images, (len(source), 28, 28, 1))
  chex.assert_type(images, np.uint8)
  chex.assert_shape(labels, (len(source),))
  return images, labels
