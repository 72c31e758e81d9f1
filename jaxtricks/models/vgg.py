"""The "M3" VGG-style net for 28x28 digits, as the EXACT paper trains it on MNIST ("vgg_m3").

Source: An, Lee, Park, Yang and So, "An Ensemble of Simple Convolutional Neural Network Models for MNIST Digit
Recognition" (arXiv 2008.10400; github ansh941/MnistSimpleCNN, modelM3.py): ten unpadded 3x3 convs of 32, 48, 64,
..., 176 channels (16 more each), each conv (no bias) -> BatchNorm -> ReLU, so the maps shrink 28 -> 26 -> ... -> 8.
EXACT (Karpukhin, Dereka, Kolesnikov 2022, arXiv 2205.09615; github ivan-chai/exact, mdn-metric) uses these ten
layers as its MNIST embedder (its configs' `model_type: vgg_m3`, `disable_head`) and puts its own head on them:
global average pooling to 176 features, then a linear classifier with bias (`head="pool"`, the default here).
An et al.'s own head flattens the 8x8x176 map, Dense 10 without bias, BatchNorm on the logits
(`head="flatten_bn"`).

Departures, neither of which changes the function: the authors feed MNIST as RGB (grey repeated 3 times) and shift
the input ((x - 0.5) * 2 after normalizing); here a 1-channel image goes in as it is. Repeating a channel is a
1-channel conv with the summed kernel, and the first BatchNorm removes any affine change of the input (the conv
has no padding and no bias, so a shift of x adds a constant per channel, which BatchNorm subtracts).
BatchNorm momentum 0.9 and epsilon 1e-5 are PyTorch's defaults (its momentum 0.1).
"""

from typing import Literal

import flax.linen as nn
import jax

M3_CHANNELS = tuple(range(32, 177, 16))   # 32, 48, ..., 176: ten layers


class VGGM3(nn.Module):
  num_classes: int = 10
  channels: tuple[int, ...] = M3_CHANNELS
  head: Literal["pool", "flatten_bn"] = "pool"
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, *, train: bool = False) -> jax.Array:
    norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5)
    x = x_BHWC
    for c in self.channels:
      x = nn.relu(norm()(nn.Conv(c, (3, 3), padding="VALID", use_bias=False)(x)))
    if self.head == "pool":
      return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))
    x = x.reshape(x.shape[0], -1)
    return norm()(nn.Dense(self.num_classes, use_bias=False)(x))
