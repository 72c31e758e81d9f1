"""MobileNet v1 (Howard et al. 2017, arXiv 1704.04861): depthwise-separable convolutions with BatchNorm.

docs/techniques.md#mobilenet: no top, global average pooling, Dropout 0.5, Dense 10; the seed feeds 56x56x3 (28x28 resized,
grey repeated to 3 channels).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

# (output channels, stride) of the 13 depthwise-separable blocks of the paper's Table 1.
MOBILENET_V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                       (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def blocks_downsampling_at(*indices: int, base=MOBILENET_V1_BLOCKS) -> tuple[tuple[int, int], ...]:
  """The paper's blocks with stride 2 only in the blocks at `indices` (0-based). On a 28x28 input with a stride-1
  stem, blocks_downsampling_at(1, 3) keeps the last ten blocks on 7x7 maps, where the paper's schedule
  (strides at 1, 3, 5, 11) leaves eight of them on 4x4 and 2x2."""
  return tuple((c, 2 if i in indices else 1) for i, (c, _) in enumerate(base))


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """lax's 'SAME' padding of one spatial dim: output ceil(size / stride), the odd pixel on the high side."""
  total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def depthwise_conv_shifted(x_BHWC: jax.Array, kernel_KK1C: jax.Array, stride: int) -> jax.Array:
  """A depthwise convolution (feature_group_count = C, 'SAME', no bias) as a sum of k*k shifted, per-channel
  scaled copies of the padded input: elementwise work that XLA fuses into one loop, forward and backward.
  Same values as lax.conv_general_dilated(..., feature_group_count=C), whose gradient XLA:CPU runs 3-11x more
  slowly (3x3, batch 128, 28x28x64 ... 7x7x512; `python -m benchmarks.speed.mobilenet_recipes --layers`)."""
  _, h, w, _ = x_BHWC.shape
  k = kernel_KK1C.shape[0]
  (top, bottom), (left, right) = _same_padding(h, k, stride), _same_padding(w, k, stride)
  x = jnp.pad(x_BHWC, ((0, 0), (top, bottom), (left, right), (0, 0)))
  out_h, out_w = -(-h // stride), -(-w // stride)
  out = None
  for i in range(k):
    for j in range(k):
      tap = x[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride, :]
      w_111C = kernel_KK1C[i, j][None, None]
      out = tap * w_111C if out is None else out + tap * w_111C
  return out


class DepthwiseConv(nn.Module):
  """nn.Conv(C, (k, k), (s, s), padding='SAME', feature_group_count=C, use_bias=False): the same parameter
  ('kernel' [k, k, 1, C]), initializer and outputs, computed by `depthwise_conv_shifted`."""
  kernel: int
  stride: int

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    c = x_BHWC.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.kernel, self.kernel, 1, c), jnp.float32)
    return depthwise_conv_shifted(x_BHWC, kernel.astype(x_BHWC.dtype), self.stride)


class _ConvBN(nn.Module):
  features: int
  kernel: int
  stride: int
  groups: int = 1
  bn_momentum: float = 0.99
  depthwise: str = "shifted"

  @nn.compact
  def __call__(self, x, train):
    if self.groups > 1 and self.groups == self.features == x.shape[-1] and self.depthwise == "shifted":
      x = DepthwiseConv(self.kernel, self.stride, name="Conv_0")(x)
    else:
      x = nn.Conv(self.features, (self.kernel, self.kernel), (self.stride, self.stride), padding="SAME",
                  feature_group_count=self.groups, use_bias=False)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-3)(x)
    return nn.relu6(x)


class MobileNetV1(nn.Module):
  """MobileNet v1 with width multiplier `width` (alpha in the paper)."""
  num_classes: int = 10
  width: float = 1.0
  stem_stride: int = 2
  blocks: tuple[tuple[int, int], ...] = MOBILENET_V1_BLOCKS
  dropout: float = 0.5
  bn_momentum: float = 0.99        # Keras' default, as the seed's model; 0.9 suits short runs
  depthwise: str = "shifted"       # DepthwiseConv; "conv": nn.Conv with feature_group_count (same function)

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, *, train: bool = False) -> jax.Array:
    ch = lambda c: max(8, int(c * self.width))
    bn = dict(bn_momentum=self.bn_momentum, depthwise=self.depthwise)
    x = _ConvBN(ch(32), 3, self.stem_stride, **bn)(x_BHWC, train)
    for features, stride in self.blocks:
      x = _ConvBN(x.shape[-1], 3, stride, groups=x.shape[-1], **bn)(x, train)   # depthwise
      x = _ConvBN(ch(features), 1, 1, **bn)(x, train)                          # pointwise
    x = x.mean(axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)
