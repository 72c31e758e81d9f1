"""Data sets (TFDS builders over raw files) and on-device batching."""

from jaxtricks.data.builders import BUILDERS, CIFAR10_CLASSES, FASHION_MNIST_CLASSES, IMAGE_SHAPES, builder, kept, load
from jaxtricks.data.idx import read_idx_gz, write_idx_gz
from jaxtricks.errors import DataError

__all__ = ["BUILDERS", "CIFAR10_CLASSES", "FASHION_MNIST_CLASSES", "IMAGE_SHAPES", "builder", "kept", "load",
           "DataError", "read_idx_gz", "write_idx_gz"]
