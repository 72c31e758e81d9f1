"""The energy network U(x) of the EBM (docs/techniques.md#ebm; Du & Mordatch 2019's design at 28x28).

Conv3x3(c0) -> Swish -> per stage: a residual block (two Conv3x3 with Swish) then 2x2 average pooling ->
global sum pool -> Dense 1. Spectral normalization on every convolution (flax's nn.SpectralNorm, power
iteration state in 'batch_stats'), none on the last Dense. Low energy = data.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


def avg_pool_2x2(x_BHWC: jax.Array) -> jax.Array:
  """2x2 average pooling, stride 2, odd sides zero-padded at the end with the zeros counted: the values of
  `nn.avg_pool(x, (2, 2), (2, 2), padding="SAME")`. Written as pad + reshape + mean because its gradient is a
  broadcast, whereas XLA constant-folds the gradient of `reduce_window` in an unrolled Langevin chain: compiling
  20 unrolled steps of 256 chains of the 64-channel net took 67 s with reduce_window and 3.6 s with this, at
  the same speed (`python -m benchmarks.langevin --pooling 64,256`, benchmarks/RESULTS.md)."""
  b, h, w, c = x_BHWC.shape
  x = jnp.pad(x_BHWC, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
  return x.reshape(b, (h + 1) // 2, 2, (w + 1) // 2, 2, c).mean(axis=(2, 4))


class _SNConv(nn.Module):
  features: int
  kernel: int = 3

  @nn.compact
  def __call__(self, x, update_stats: bool):
    conv = nn.Conv(self.features, (self.kernel, self.kernel), padding="SAME")
    return nn.SpectralNorm(conv)(x, update_stats=update_stats)


class _ResBlock(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x, update_stats: bool):
    h = nn.swish(_SNConv(self.features)(x, update_stats))
    h = _SNConv(self.features)(h, update_stats)
    skip = x if x.shape[-1] == self.features else _SNConv(self.features, 1)(x, update_stats)
    return nn.swish(h + skip)


class EnergyNet(nn.Module):
  """x [B, H, W, C] in the data range -> energies [B]."""
  stem: int = 64
  stages: tuple[int, ...] = (64, 128, 256)

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, *, update_stats: bool = False) -> jax.Array:
    x = nn.swish(_SNConv(self.stem)(x_BHWC, update_stats))
    for features in self.stages:
      x = _ResBlock(features)(x, update_stats)
      x = avg_pool_2x2(x)
    x = x.sum(axis=(1, 2))
    return nn.Dense(1)(x)[:, 0]
