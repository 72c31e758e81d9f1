"""The energy network U(x) of the EBM (docs/techniques.md#ebm; Du & Mordatch 2019's design at 28x28).

Conv3x3(c0) -> Swish -> per stage: a residual block (two Conv3x3 with Swish) then 2x2 average pooling ->
global sum pool -> Dense 1. Spectral normalization on every convolution (flax's nn.SpectralNorm, power
iteration state in 'batch_stats'), none on the last Dense. Low energy = data.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtricks import onednn


def avg_pool_2x2(x_BHWC: jax.Array) -> jax.Array:
  """2x2 average pooling, stride 2, odd sides zero-padded at the end with the zeros counted: the values of
  `nn.avg_pool(x, (2, 2), (2, 2), padding="SAME")`. Written as pad + reshape + mean because its gradient is a
  broadcast, whereas XLA constant-folds the gradient of `reduce_window` in an unrolled Langevin chain: compiling
  20 unrolled steps of 256 chains of the 64-channel net took 67 s with reduce_window and 3.6 s with this, at
  the same speed (`python -m benchmarks.speed.langevin --pooling 64,256`, benchmarks/speed/README.md)."""
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


def space_to_depth_2x2(x_BHWC: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, ceil(H/2), ceil(W/2), 4C]: each 2x2 patch as channels (odd sides zero-padded at the end)."""
  b, h, w, c = x_BHWC.shape
  x = jnp.pad(x_BHWC, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
  x = x.reshape(b, (h + 1) // 2, 2, (w + 1) // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h + 1) // 2, (w + 1) // 2, 4 * c)


class Conv2x2(nn.Module):
  """nn.Conv(features, (2, 2), padding="SAME") — the same parameters ("kernel" [2, 2, C, F], "bias" [F]), the same
  initialization and values — computed as matrix products, which reach a CPU's matrix units in bfloat16 where
  XLA:CPU's own convolutions do not (issue 35). SAME pads one row and column at the end, so out[i, j] is the sum over
  the taps (a, b) in {0, 1}^2 of x[i + a, j + b] @ kernel[a, b]. `impl`: "taps" concatenates the four shifted maps
  along channels, one dot with the kernel as a [4C, F] matrix; "shifted": four dots, summed; "onednn": oneDNN's
  convolution (jaxtricks.onednn.conv2d, where built), not a matrix product but one that reaches the same units."""
  features: int
  impl: str = "taps"
  dtype: Any = None

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    c = x_BHWC.shape[-1]
    kernel = self.param("kernel", nn.linear.default_kernel_init, (2, 2, c, self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    x, kernel, bias = nn.dtypes.promote_dtype(x_BHWC, kernel, bias, dtype=self.dtype)
    if self.impl == "onednn":
      return onednn.conv2d(x, kernel, 1, [(0, 1), (0, 1)]) + bias[None, None, None, :]
    h, w = x.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    taps = [xp[:, a:a + h, b:b + w, :] for a in (0, 1) for b in (0, 1)]
    if self.impl == "taps":
      y = jnp.concatenate(taps, axis=-1) @ kernel.reshape(4 * c, self.features)
    elif self.impl == "shifted":
      y = sum(t @ kernel[a, b] for t, (a, b) in zip(taps, [(0, 0), (0, 1), (1, 0), (1, 1)]))
    else:
      raise ValueError(f"Conv2x2: impl must be taps, shifted or onednn, got {self.impl!r}")
    return y + bias[None, None, None, :]


class StridedEnergyNet(nn.Module):
  """The small energy net of the UvA deep-learning tutorial 8 (Lippe 2022: four stride-2 convolutions of 16, 32,
  64, 64 channels with Swish, Dense 64, Dense 1; no normalization), each stride-2 convolution in the form whose
  input-gradient XLA:CPU runs fast: space-to-depth, then a stride-1 2x2 convolution (together a stride-2 4x4
  convolution). A strided convolution's input-gradient is the lhs-dilated convolution XLA:CPU runs slowly, and a
  Langevin step is exactly that gradient (benchmarks/studies/ebm/README.md, the new main job). x [B, H, W, C] -> energies [B].
  `dtype`: the compute type of the convolutions, the Dense layers and the activations (e.g. bfloat16; the
  parameters stay float32 and the energies come out float32); None: the parameters' and inputs' (float32).
  `conv`: how the 2x2 convolutions are computed — "xla" (nn.Conv: XLA's convolution), or as matrix products,
  "taps" or "shifted" (`Conv2x2`), or by oneDNN ("onednn", `Conv2x2`); the parameters are the same in all, so a
  trained state runs in any."""
  features: tuple[int, ...] = (16, 32, 64, 64)
  hidden: int = 64
  dtype: Any = None
  conv: str = "xla"

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, *, update_stats: bool = False) -> jax.Array:
    del update_stats   # no spectral norm: the same call as EnergyNet's
    x = x_BHWC
    for i, f in enumerate(self.features):
      conv = (nn.Conv(f, (2, 2), padding="SAME", dtype=self.dtype, name=f"Conv_{i}") if self.conv == "xla" else
              Conv2x2(f, impl=self.conv, dtype=self.dtype, name=f"Conv_{i}"))
      x = nn.swish(conv(space_to_depth_2x2(x)))
    x = nn.swish(nn.Dense(self.hidden, dtype=self.dtype)(x.reshape(x.shape[0], -1)))
    e_B = nn.Dense(1, dtype=self.dtype)(x)[:, 0]
    return e_B if self.dtype is None else e_B.astype(jnp.float32)
