"""DCGAN generator and discriminator (Radford et al. 2016) at 28x28x1 and 32x32x3.

The design of the reference (bojone/gan) and of the TF DCGAN tutorial, at MNIST size: 5x5 convolutions with
stride 2, BatchNorm, LeakyReLU 0.2, tanh output in [-1, 1]. `width` scales every channel count (tests use tiny).
"""

import flax.linen as nn
import jax


class Generator(nn.Module):
  """z [B, Z] -> images [B, H, W, C] in [-1, 1]; H = W = 28 (start 7) or 32 (start 8)."""
  image_shape: tuple[int, int, int] = (28, 28, 1)
  width: int = 64           # channels of the last hidden layer; earlier layers 2x, 4x

  @nn.compact
  def __call__(self, z_BZ: jax.Array, *, train: bool = True) -> jax.Array:
    h, _, c = self.image_shape
    start = h // 4
    bn = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)
    x = nn.Dense(start * start * 4 * self.width, use_bias=False)(z_BZ)
    x = nn.leaky_relu(bn()(x), 0.2).reshape(z_BZ.shape[0], start, start, 4 * self.width)
    x = nn.ConvTranspose(2 * self.width, (5, 5), (1, 1), padding="SAME", use_bias=False)(x)
    x = nn.leaky_relu(bn()(x), 0.2)
    x = nn.ConvTranspose(self.width, (5, 5), (2, 2), padding="SAME", use_bias=False)(x)
    x = nn.leaky_relu(bn()(x), 0.2)
    x = nn.ConvTranspose(c, (5, 5), (2, 2), padding="SAME")(x)
    return nn.tanh(x)


class Discriminator(nn.Module):
  """images [B, H, W, C] -> scores [B]; hinge convention: LOW for real data (SPEC.md §2)."""
  width: int = 64

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, *, train: bool = True) -> jax.Array:
    x = nn.leaky_relu(nn.Conv(self.width, (5, 5), (2, 2), padding="SAME")(x_BHWC), 0.2)
    x = nn.Conv(2 * self.width, (5, 5), (2, 2), padding="SAME", use_bias=False)(x)
    x = nn.leaky_relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x), 0.2)
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(1)(x)[:, 0]
