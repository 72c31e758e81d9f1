"""A small CNN for 28x28 images (the flax MNIST example's design)."""

import flax.linen as nn
import jax


class CNN(nn.Module):
  """Conv(32) -> pool -> Conv(64) -> pool -> Dense(hidden) -> Dense(num_classes)."""
  num_classes: int = 10
  features: tuple[int, int] = (32, 64)
  hidden: int = 256

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, *, train: bool = False) -> jax.Array:
    del train  # no dropout or BatchNorm
    x = x_BHWC
    for f in self.features:
      x = nn.relu(nn.Conv(f, (3, 3))(x))
      x = nn.avg_pool(x, (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.hidden)(x))
    return nn.Dense(self.num_classes)(x)
