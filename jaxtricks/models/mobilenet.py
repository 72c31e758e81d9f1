"""MobileNet v1 (Howard et al. 2017, arXiv 1704.04861): depthwise-separable convolutions with BatchNorm.

docs/techniques.md#mobilenet: no top, global average pooling, Dropout 0.5, Dense 10; the seed feeds 56x56x3 (28x28 resized,
grey repeated to 3 channels).
"""

import flax.linen as nn
import jax

# (output channels, stride) of the 13 depthwise-separable blocks of the paper's Table 1.
MOBILENET_V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                       (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


class _ConvBN(nn.Module):
  features: int
  kernel: int
  stride: int
  groups: int = 1

  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(self.features, (self.kernel, self.kernel), (self.stride, self.stride), padding="SAME",
                feature_group_count=self.groups, use_bias=False)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3)(x)
    return nn.relu6(x)


class MobileNetV1(nn.Module):
  """MobileNet v1 with width multiplier `width` (alpha in the paper)."""
  num_classes: int = 10
  width: float = 1.0
  stem_stride: int = 2
  blocks: tuple[tuple[int, int], ...] = MOBILENET_V1_BLOCKS
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, *, train: bool = False) -> jax.Array:
    ch = lambda c: max(8, int(c * self.width))
    x = _ConvBN(ch(32), 3, self.stem_stride)(x_BHWC, train)
    for features, stride in self.blocks:
      x = _ConvBN(x.shape[-1], 3, stride, groups=x.shape[-1])(x, train)   # depthwise
      x = _ConvBN(ch(features), 1, 1)(x, train)                          # pointwise
    x = x.mean(axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)
