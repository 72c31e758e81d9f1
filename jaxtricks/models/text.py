"""The seed's two IMDB classifiers in Flax (docs/techniques.md#margin; Keras 2.0 layers), each returning one logit per review.

LSTM: Embedding(20000, 128) -> LSTM(128, dropout 0.2, recurrent_dropout 0.2) -> Dense 1.
CNN:  Embedding(5000, 50) -> Dropout 0.2 -> Conv1D(250, 3, valid, relu) -> global max pool -> Dense 250
      -> Dropout 0.2 -> relu -> Dense 1.

Keras' LSTM, re-stated: gates i, f, c, o from x_t W + h_{t-1} U + b; recurrent activation hard_sigmoid
(Keras 2.0's default, clip(0.2 x + 0.5, 0, 1); `gate="sigmoid"` for later Keras), glorot-uniform W, orthogonal
U, forget-gate bias 1; `dropout` drops inputs and `recurrent_dropout` drops h_{t-1} with one mask per sequence
for all time steps (Gal & Ghahramani 2016, Keras' implementation 2: one mask shared by the four gates).
The recurrence is one `lax.scan`; no masking of the padding (the seed's Keras code has none).
"""

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp


def keras_embedding_init(key, shape, dtype=jnp.float32):
  """Keras' Embedding default: uniform(-0.05, 0.05)."""
  return jax.random.uniform(key, shape, dtype, -0.05, 0.05)


def hard_sigmoid(x):
  """Keras 2.0: clip(0.2 x + 0.5, 0, 1)."""
  return jnp.clip(0.2 * x + 0.5, 0.0, 1.0)


class KerasLSTM(nn.Module):
  """An LSTM layer returning the last hidden state [B, H] of inputs [B, T, D]."""
  features: int
  dropout: float = 0.0
  recurrent_dropout: float = 0.0
  gate: Literal["hard_sigmoid", "sigmoid"] = "hard_sigmoid"

  @nn.compact
  def __call__(self, x_BTD: jax.Array, *, train: bool = False) -> jax.Array:
    b, _, d = x_BTD.shape
    h = self.features
    w = self.param("kernel", nn.initializers.glorot_uniform(), (d, 4 * h))
    u = self.param("recurrent_kernel", nn.initializers.orthogonal(), (h, 4 * h))
    bias = self.param("bias", lambda k, s: jnp.zeros(s).at[h:2 * h].set(1.0), (4 * h,))   # unit forget bias
    if train and self.dropout > 0:
      keep = jax.random.bernoulli(self.make_rng("dropout"), 1 - self.dropout, (b, 1, d))
      x_BTD = jnp.where(keep, x_BTD / (1 - self.dropout), 0.0)
    mask_BH = jnp.ones((b, h))
    if train and self.recurrent_dropout > 0:
      keep = jax.random.bernoulli(self.make_rng("dropout"), 1 - self.recurrent_dropout, (b, h))
      mask_BH = keep / (1 - self.recurrent_dropout)
    act = hard_sigmoid if self.gate == "hard_sigmoid" else jax.nn.sigmoid
    xw_TB4H = jnp.swapaxes(x_BTD @ w + bias[None, None, :], 0, 1)   # input projections of all steps at once

    def step(carry, xw_B4H):
      h_prev, c_prev = carry
      z = xw_B4H + (h_prev * mask_BH) @ u
      i, f, g, o = jnp.split(z, 4, axis=-1)
      c = act(f) * c_prev + act(i) * jnp.tanh(g)
      h_new = act(o) * jnp.tanh(c)
      return (h_new, c), None

    zeros = jnp.zeros((b, h), x_BTD.dtype)
    (h_last, _), _ = jax.lax.scan(step, (zeros, zeros), xw_TB4H)
    return h_last


class LSTMClassifier(nn.Module):
  vocab_size: int = 20000
  embed_dim: int = 128
  hidden: int = 128
  dropout: float = 0.2
  recurrent_dropout: float = 0.2
  gate: Literal["hard_sigmoid", "sigmoid"] = "hard_sigmoid"

  @nn.compact
  def __call__(self, ids_BT: jax.Array, *, train: bool = False) -> jax.Array:
    x = nn.Embed(self.vocab_size, self.embed_dim, embedding_init=keras_embedding_init)(ids_BT)
    h = KerasLSTM(self.hidden, self.dropout, self.recurrent_dropout, self.gate)(x, train=train)
    return nn.Dense(1)(h)[:, 0]


class CNNClassifier(nn.Module):
  vocab_size: int = 5000
  embed_dim: int = 50
  filters: int = 250
  kernel_size: int = 3
  hidden: int = 250
  dropout: float = 0.2

  @nn.compact
  def __call__(self, ids_BT: jax.Array, *, train: bool = False) -> jax.Array:
    x = nn.Embed(self.vocab_size, self.embed_dim, embedding_init=keras_embedding_init)(ids_BT)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.relu(nn.Conv(self.filters, (self.kernel_size,), padding="VALID")(x))
    x = x.max(axis=1)
    x = nn.Dense(self.hidden)(x)
    x = nn.relu(nn.Dropout(self.dropout, deterministic=not train)(x))
    return nn.Dense(1)(x)[:, 0]
