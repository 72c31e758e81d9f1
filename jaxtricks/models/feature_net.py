"""The feature network behind FID-FMNIST and the classifier-based inception score.

A small VGG-style CNN for 28x28x1 in [0, 1]: three stages of 3x3 convs with max pooling, a 128-d penultimate
layer (the features), Dense 10. Trained by `python -m train.feature_net` with a fixed seed; its weights ship
in jaxtricks/assets/ so that FID-FMNIST numbers are comparable across runs and machines.
"""

import flax.linen as nn
import jax


class FeatureNet(nn.Module):
  num_classes: int = 10
  stages: tuple[tuple[int, int], ...] = ((32, 2), (64, 2), (128, 1))   # (channels, convs) per stage
  features: int = 128
  dropout: float = 0.3

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, *, train: bool = False, return_features: bool = False):
    """Logits [B, 10]; with return_features, (features [B, 128], logits) from the same pass."""
    x = x_BHWC
    for channels, convs in self.stages:
      for _ in range(convs):
        x = nn.relu(nn.Conv(channels, (3, 3))(x))
      x = nn.max_pool(x, (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)
    features_BD = nn.relu(nn.Dense(self.features)(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(features_BD)
    logits_BC = nn.Dense(self.num_classes)(x)
    return (features_BD, logits_BC) if return_features else logits_BC
