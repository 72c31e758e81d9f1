"""Data sets (TFDS builders over raw files) and on-device batching."""

from jaxtricks.data.builders import BUILDERS, FASHION_MNIST_CLASSES, builder, load
from jaxtricks.data.idx import DataError, read_idx_gz, write_idx_gz

__all__ = ["BUILDERS", "FASHION_MNIST_CLASSES", "builder", "load", "DataError", "read_idx_gz", "write_idx_gz"]
