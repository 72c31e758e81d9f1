"""Evaluation metrics, per example where that makes sense (the caller reduces)."""

import jax
import jax.numpy as jnp


def correct(logits_BC: jax.Array, labels_B: jax.Array) -> jax.Array:
  """1.0 where argmax(logits) == label, else 0.0; shape [B]."""
  return (jnp.argmax(logits_BC, axis=-1) == labels_B).astype(jnp.float32)
