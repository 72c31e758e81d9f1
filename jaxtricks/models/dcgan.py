"""DCGAN generator and discriminator (Radford et al. 2016) at 28x28x1 and 32x32x3.

The design of the reference (bojone/gan) and of the TF DCGAN tutorial, at MNIST size: 5x5 convolutions with
stride 2, BatchNorm, LeakyReLU 0.2, tanh output in [-1, 1]. `width` scales every channel count (tests use tiny).
The generator's transposed convolutions are `ConvTranspose` below: nn.ConvTranspose's function and parameters,
computed in the sub-pixel form, whose gradient XLA:CPU runs ~6x faster. `dtype` is the compute type (parameters
stay float32; e.g. jnp.bfloat16 for mixed precision); both nets return float32.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtricks import onednn


def _subpixel_taps(k: int, s: int) -> tuple[np.ndarray, int, int]:
  """For one spatial dim of a transposed conv (kernel k, stride s, lax's 'SAME' padding): which kernel tap feeds
  output phase a (= output index mod s) from input offset dmin + j, as an index table [s, L] (k: no tap), and
  the offsets' range (dmin, dmax). Output o = s*m + a reads the lhs-dilated input at o + tap - pad_lo, i.e. input
  m + (a + tap - pad_lo) / s when that is whole."""
  pad_lo = k - 1 if s > k - 1 else -(-(k + s - 2) // 2)   # lax.conv_transpose's 'SAME' padding, low side
  offsets = {a: {(a + t - pad_lo) // s: t for t in range(k) if (a + t - pad_lo) % s == 0} for a in range(s)}
  dmin = min(d for o in offsets.values() for d in o)   # a phase with no tap (k < s) stays all zero
  dmax = max(d for o in offsets.values() for d in o)
  table = np.array([[offsets[a].get(d, k) for d in range(dmin, dmax + 1)] for a in range(s)])
  return table, dmin, dmax


def conv_taps(x_BHWC: jax.Array, kernel_KKCO: jax.Array, stride: int, padding) -> jax.Array:
  """lax.conv_general_dilated(x, kernel, (s, s), padding) (NHWC, HWIO) as ONE matrix product: the k*k strided
  views of the padded input (one per kernel tap) concatenated along channels, times the kernel as a [k*k*C, O]
  matrix — the patches built by slicing, which XLA:CPU sends to its dot kernels (in bfloat16: a CPU's matrix
  units, which its bf16 convolutions do not reach; issue 35). `padding`: [(lo, hi), (lo, hi)] or 'SAME'/'VALID'."""
  k, c, o = kernel_KKCO.shape[0], kernel_KKCO.shape[2], kernel_KKCO.shape[3]
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(x_BHWC.shape[1:3], (k, k), (stride, stride), padding)
  x = jnp.pad(x_BHWC, ((0, 0), *padding, (0, 0)))
  h = (x.shape[1] - k) // stride + 1
  w = (x.shape[2] - k) // stride + 1
  taps = [x[:, a:a + stride * (h - 1) + 1:stride, b:b + stride * (w - 1) + 1:stride, :]
          for a in range(k) for b in range(k)]
  return jnp.concatenate(taps, axis=-1) @ kernel_KKCO.reshape(k * k * c, o)


def conv_transpose_subpixel(x_BHWC: jax.Array, kernel_KKCO: jax.Array, stride: int, conv: str = "xla") -> jax.Array:
  """lax.conv_transpose(x, kernel, (s, s), 'SAME') (no kernel flip: flax's nn.ConvTranspose) as ONE stride-1
  convolution to s*s*O channels followed by depth-to-space — the sub-pixel / polyphase form (Shi et al. 2016):
  output pixel (s*i + a, s*j + b) only ever meets the taps of phase (a, b), so each phase is a small ordinary
  convolution of the undilated input; no multiplications by the zeros of a dilated input, forward or backward.
  Output [B, s*H, s*W, O]. `conv`: that convolution by XLA ("xla"), as one matrix product (`conv_taps`), or by
  oneDNN ("onednn": jaxtricks.onednn.conv2d, where built)."""
  B, H, W, C = x_BHWC.shape
  k, o = kernel_KKCO.shape[0], kernel_KKCO.shape[-1]
  table, dmin, dmax = _subpixel_taps(k, stride)
  padded = jnp.pad(kernel_KKCO, ((0, 1), (0, 1), (0, 0), (0, 0)))        # index k: the zero tap
  phases = padded[table[:, None, :, None], table[None, :, None, :]]       # [s, s, L, L, C, O]
  length = dmax - dmin + 1
  kernel = phases.transpose(2, 3, 4, 0, 1, 5).reshape(length, length, C, stride * stride * o)
  if conv == "taps":
    y = conv_taps(x_BHWC, kernel, 1, [(-dmin, dmax)] * 2)
  elif conv == "onednn":
    y = onednn.conv2d(x_BHWC, kernel, 1, [(-dmin, dmax)] * 2)
  else:
    y = jax.lax.conv_general_dilated(x_BHWC, kernel, (1, 1), [(-dmin, dmax)] * 2,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y = y.reshape(B, H, W, stride, stride, o).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(B, stride * H, stride * W, o)


class ConvTranspose(nn.Module):
  """nn.ConvTranspose(features, (k, k), (s, s), padding='SAME') — same parameters ('kernel' [k, k, C, O], 'bias'),
  same initializers, same outputs up to float rounding — computed by `conv_transpose_subpixel`. XLA:CPU runs the
  gradient of nn.ConvTranspose's lhs-dilated convolution slowly (DCGAN's 7->14 layer at batch 64: 125 ms for
  forward + backward against 19 ms in this form; `python -m benchmarks.speed.gan_parts`, benchmarks/speed/README.md)."""
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32   # compute type; the parameters stay float32
  conv: str = "xla"                # its stride-1 convolution: XLA's, "taps" (conv_taps) or "onednn"

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    (k, k2), (s, s2) = self.kernel_size, self.strides
    if k != k2 or s != s2:
      raise ValueError(f"square kernels and strides only, got {self.kernel_size}, {self.strides}")
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, x_BHWC.shape[-1], self.features))
    y = conv_transpose_subpixel(x_BHWC.astype(self.dtype), kernel.astype(self.dtype), s, conv=self.conv)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,)).astype(self.dtype).reshape(1, 1, 1, -1)
    return y


class ConvBy(nn.Module):
  """nn.Conv(features, (k, k), (s, s), padding='SAME') — the same parameters and initializers — computed as `conv`
  says: "taps" (`conv_taps`, one matrix product) or "onednn" (jaxtricks.onednn.conv2d)."""
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  conv: str = "taps"

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    k, s = self.kernel_size[0], self.strides[0]
    kernel = self.param("kernel", nn.linear.default_kernel_init, (k, k, x_BHWC.shape[-1], self.features))
    compute = conv_taps if self.conv == "taps" else onednn.conv2d
    y = compute(x_BHWC.astype(self.dtype), kernel.astype(self.dtype), s, "SAME")
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,)).astype(self.dtype).reshape(1, 1, 1, -1)
    return y


def _check_conv(conv: str) -> None:
  if conv not in ("xla", "taps", "onednn"):
    raise ValueError(f"conv must be 'xla', 'taps' or 'onednn', got {conv!r}")


class Generator(nn.Module):
  """z [B, Z] -> images [B, H, W, C] in [-1, 1]; H = W = 28 (start 7) or 32 (start 8)."""
  image_shape: tuple[int, int, int] = (28, 28, 1)
  width: int = 64           # channels of the last hidden layer; earlier layers 2x, 4x
  conv_transpose: str = "subpixel"   # or "flax": nn.ConvTranspose itself (same function and params, slower on CPU)
  dtype: jnp.dtype = jnp.float32     # compute type (parameters stay float32)
  conv: str = "xla"                  # the sub-pixel form's convolutions: XLA's, "taps" (one matrix product each), "onednn"

  @nn.compact
  def __call__(self, z_BZ: jax.Array, *, train: bool = True) -> jax.Array:
    _check_conv(self.conv)
    h, _, c = self.image_shape
    start = h // 4
    bn = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)
    x = nn.Dense(start * start * 4 * self.width, use_bias=False, dtype=self.dtype)(z_BZ)
    x = nn.leaky_relu(bn()(x), 0.2).reshape(z_BZ.shape[0], start, start, 4 * self.width)
    if self.conv_transpose not in ("subpixel", "flax"):
      raise ValueError(f"conv_transpose must be 'subpixel' or 'flax', got {self.conv_transpose!r}")
    if self.conv != "xla" and self.conv_transpose != "subpixel":
      raise ValueError(f"conv {self.conv!r} is the sub-pixel form's; conv_transpose 'flax' computes by XLA only")
    up = functools.partial(functools.partial(ConvTranspose, conv=self.conv) if self.conv_transpose == "subpixel"
                           else functools.partial(nn.ConvTranspose, padding="SAME"), dtype=self.dtype)
    # named as nn.ConvTranspose's would be, so params and checkpoints keep their paths either way
    x = up(2 * self.width, (5, 5), (1, 1), use_bias=False, name="ConvTranspose_0")(x)
    x = nn.leaky_relu(bn()(x), 0.2)
    x = up(self.width, (5, 5), (2, 2), use_bias=False, name="ConvTranspose_1")(x)
    x = nn.leaky_relu(bn()(x), 0.2)
    x = up(c, (5, 5), (2, 2), name="ConvTranspose_2")(x)
    return nn.tanh(x).astype(jnp.float32)


class Discriminator(nn.Module):
  """images [B, H, W, C] -> scores [B]; hinge convention: LOW for real data (docs/techniques.md#gan)."""
  width: int = 64
  dtype: jnp.dtype = jnp.float32     # compute type (parameters stay float32)
  conv: str = "xla"                  # its convolutions: XLA's, "taps" or "onednn" (ConvBy: the same parameters)

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, *, train: bool = True) -> jax.Array:
    _check_conv(self.conv)
    conv = (functools.partial(nn.Conv, padding="SAME") if self.conv == "xla" else
            functools.partial(ConvBy, conv=self.conv))
    x = nn.leaky_relu(conv(self.width, (5, 5), (2, 2), dtype=self.dtype, name="Conv_0")(x_BHWC), 0.2)
    x = conv(2 * self.width, (5, 5), (2, 2), use_bias=False, dtype=self.dtype, name="Conv_1")(x)
    x = nn.leaky_relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x), 0.2)
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(1, dtype=self.dtype)(x)[:, 0].astype(jnp.float32)
