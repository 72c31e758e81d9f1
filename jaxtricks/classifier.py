"""Supervised training of a classifier with any objective: its state (arrays only), one optimizer step, and the
forward pass for evaluation. Used by train.classify, train.sentiment and train.feature_net.

    state = classifier.init(key, model, x_shape, tx)
    state, metrics = classifier.train_step(state, batch, key, model=model, tx=tx, objective=objective)

`model` (a flax linen module) and `tx` (an optax transformation) are passed to every call, not stored in the
state: the state is a pytree of arrays that orbax saves and jit shards like any other.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct


@struct.dataclass
class ClassifierState:
  step: jax.Array
  params: Any
  batch_stats: Any            # BatchNorm statistics ({} for models without BatchNorm)
  opt_state: Any


def init(key: jax.Array, model: nn.Module, x_shape: tuple[int, ...], tx: optax.GradientTransformation,
         x_dtype=jnp.float32) -> ClassifierState:
  """A fresh state for inputs of shape x_shape (batch dimension included)."""
  variables = model.init(key, jnp.zeros(x_shape, x_dtype))
  params = variables["params"]
  return ClassifierState(step=jnp.zeros((), jnp.int32), params=params,
                         batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))


def variables(state: ClassifierState, params=None) -> dict:
  params = state.params if params is None else params
  return {"params": params, "batch_stats": state.batch_stats} if state.batch_stats else {"params": params}


def predict(model: nn.Module, state: ClassifierState, x: jax.Array) -> jax.Array:
  """The model's outputs in inference mode (BatchNorm running statistics, no dropout)."""
  return model.apply(variables(state), x)


def flip_averaged_log_probs(model: nn.Module, state: ClassifierState, x_BHWC: jax.Array) -> jax.Array:
  """log ½(softmax f(x) + softmax f(x mirrored left-right)), [B, K]: test-time augmentation by the flips a model
  was trained with (one forward pass over the 2B images; BatchNorm in inference mode, so the pair does not mix)."""
  b = x_BHWC.shape[0]
  logits_2BK = predict(model, state, jnp.concatenate([x_BHWC, x_BHWC[:, :, ::-1, :]]))
  log_p_2BK = jax.nn.log_softmax(logits_2BK.reshape(2, b, -1), axis=-1)
  return jax.nn.logsumexp(log_p_2BK, axis=0) - jnp.log(2.0)


def train_step(state: ClassifierState, batch: dict, key: jax.Array, *, model: nn.Module,
               tx: optax.GradientTransformation, objective: Callable[[jax.Array, dict, jax.Array], jax.Array],
               metrics_fn: Callable[[jax.Array, dict], dict] | None = None, input_key: str = "image"):
  """One optimizer step on `objective(outputs, batch, step)` (a scalar; `step`, the state's step before this
  update, is for schedules inside the loss such as EXACT's sigma); training-mode forward pass (dropout from key,
  BatchNorm statistics updated). Metrics: loss, grad_norm, param_norm and `metrics_fn(outputs, batch)`."""
  def loss_fn(params):
    outputs, updates = model.apply(variables(state, params), batch[input_key], train=True, rngs={"dropout": key},
                                   mutable=["batch_stats"])
    return objective(outputs, batch, state.step), (outputs, updates)

  (loss, (outputs, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, param_updates)
  state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                        batch_stats=updates.get("batch_stats", state.batch_stats))
  metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), "param_norm": optax.global_norm(params)}
  if metrics_fn is not None:
    metrics.update(metrics_fn(outputs, batch))
  return state, metrics
