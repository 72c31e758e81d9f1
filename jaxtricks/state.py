"""Training state: flax's TrainState plus BatchNorm statistics."""

from typing import Any

from flax.training import train_state


class TrainState(train_state.TrainState):
  """params, opt_state, step, and `batch_stats` ({} for models without BatchNorm)."""
  batch_stats: Any = None
