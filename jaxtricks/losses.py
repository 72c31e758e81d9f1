"""Losses that train for accuracy (docs/techniques.md#margin, #exact). Per-example values; the caller reduces.

All take logits (or EXACT's mu and sigma), keep hyperparameters keyword-only, check shapes, dtypes and static
arguments (ValueError naming the argument) and work under jit and vmap.

Values that are only known inside jit (a label out of range, a traced sigma <= 0) are checked by
`jax.experimental.checkify.debug_check`: a no-op (dropped from the compiled program) unless the caller runs the
function under `checkify.checkify(f, errors=checkify.user_checks)`, as the trainers do for their first step
(`jaxtricks.harness.checked_first_step`). Without it a label -1 scores the last class and a label >= C gives NaN.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import checkify
from jax.scipy.special import log_ndtr


def _check_same_shape(name: str, a, b) -> None:
  if jnp.shape(a) != jnp.shape(b):
    raise ValueError(f"{name}: shapes differ: {jnp.shape(a)} and {jnp.shape(b)}")


def _check_labels(name: str, logits, labels) -> None:
  """Shapes and dtype always; the values in [0, C) under checkify (a concrete NumPy/Python array: always)."""
  if jnp.ndim(logits) < 1:
    raise ValueError(f"{name}: logits need a class axis (shape [..., C]), got shape {jnp.shape(logits)}")
  if jnp.shape(logits)[:-1] != jnp.shape(labels):
    raise ValueError(f"{name}: logits {jnp.shape(logits)} need labels of shape {jnp.shape(logits)[:-1]}, "
                     f"got {jnp.shape(labels)}")
  dtype = np.asarray(labels).dtype if _concrete(labels) else jnp.result_type(labels)
  if not jnp.issubdtype(dtype, jnp.integer):
    raise ValueError(f"{name}: labels must be integer class indices, got dtype {dtype}")
  check_in_range(name, "labels", labels, 0, jnp.shape(logits)[-1])


def _concrete(x) -> bool:
  """A value known now (Python, NumPy, or a jax.Array outside any trace: eager use), so it is checked at once;
  a traced value is left to checkify."""
  if isinstance(x, jax.Array):
    return not isinstance(x, jax.core.Tracer)
  return isinstance(x, (int, float, np.integer, np.floating, np.ndarray, list, tuple))


def check_in_range(name: str, argument: str, values, low: int, high: int) -> None:
  """Every value in [low, high): checked now for a NumPy/Python array (ValueError), else by a debug_check
  (under checkify only)."""
  if _concrete(values):
    v = np.asarray(values)
    if v.size and not (v.min() >= low and v.max() < high):
      raise ValueError(f"{name}: {argument} must be in [{low}, {high}), got values from {v.min()} to {v.max()}")
    return
  v = jnp.asarray(values)
  if v.size:
    checkify.debug_check(jnp.all((v >= low) & (v < high)),
                         f"{name}: {argument} must be in [{low}, {high}), got values from {{}} to {{}}",
                         jnp.min(v), jnp.max(v))


def _check_sigma(name: str, sigma) -> None:
  """sigma > 0 (and not NaN): now for a Python/NumPy value, under checkify for a traced one."""
  if _concrete(sigma):
    s = np.asarray(sigma, np.float64)
    if not np.all(s > 0):
      raise ValueError(f"{name}: sigma must be positive, got {s.min() if s.ndim else s}")
    return
  s = jnp.asarray(sigma)
  checkify.debug_check(jnp.all(s > 0), f"{name}: sigma must be positive, got a minimum of {{}}", jnp.min(s))


def _check_num_points(name: str, num_points) -> None:
  if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)) or num_points < 1:
    raise ValueError(f"{name}: num_points (Gauss-Hermite nodes) must be a positive integer, got {num_points!r}")


def _check_unit_interval(name: str, labels) -> None:
  """Binary targets in [0, 1]: now for NumPy/Python values, under checkify for traced ones."""
  if _concrete(labels):
    v = np.asarray(labels, np.float64)
    if v.size and not (v.min() >= 0 and v.max() <= 1):
      raise ValueError(f"{name}: labels must be in [0, 1], got values from {v.min()} to {v.max()}")
    return
  v = jnp.asarray(labels)
  if v.size:
    checkify.debug_check(jnp.all((v >= 0) & (v <= 1)), f"{name}: labels must be in [0, 1], got values from {{}} "
                         "to {}", jnp.min(v), jnp.max(v))


def _theta(x):
  """Heaviside step with theta(0) = 1/2 (docs/techniques.md#margin)."""
  return jnp.where(x > 0, 1.0, jnp.where(x < 0, 0.0, 0.5)).astype(jnp.result_type(float))


def margin_binary_cross_entropy(logits: chex.Array, labels: chex.Array, *, margin: float = 0.6) -> jax.Array:
  """Margin-truncated binary cross-entropy (Su, kexue.fm/archives/4293).

      lambda(y, p) = 1 - theta(y - m) theta(p - m) - theta(1 - m - y) theta(1 - m - p)
      loss = -lambda(y, p) [y log p + (1 - y) log(1 - p)],   p = sigmoid(logits)

  A positive already above m, or a negative below 1 - m, gets zero loss and zero gradient. p is compared
  with m through the logits (p > m  <=>  logit > log(m / (1 - m))), and log p = log_sigmoid(logit), so no
  +1e-8 is needed.
  """
  if not 0.5 < margin < 1:
    raise ValueError(f"margin must be in (0.5, 1), got {margin}")
  _check_same_shape("margin_binary_cross_entropy", logits, labels)
  _check_unit_interval("margin_binary_cross_entropy", labels)
  logits = jnp.asarray(logits, jnp.result_type(float))
  labels = jnp.asarray(labels, logits.dtype)
  t = math.log(margin) - math.log1p(-margin)            # logit of m; 1 - m has logit -t
  weight = 1.0 - _theta(labels - margin) * _theta(logits - t) - _theta(1 - margin - labels) * _theta(-t - logits)
  ce = -(labels * jax.nn.log_sigmoid(logits) + (1 - labels) * jax.nn.log_sigmoid(-logits))
  return jax.lax.stop_gradient(weight) * ce


def margin_softmax_cross_entropy(logits: chex.Array, labels: chex.Array, *, margin: float) -> jax.Array:
  """Multi-class margin cross-entropy: -(1 - theta(p_y - m)) log p_y, p = softmax(logits).

  Zero loss and gradient where the true class's probability exceeds m; weight 1/2 at p_y = m exactly.
  """
  if not 0 < margin < 1:
    raise ValueError(f"margin must be in (0, 1), got {margin}")
  _check_labels("margin_softmax_cross_entropy", logits, labels)
  log_p = jax.nn.log_softmax(jnp.asarray(logits, jnp.result_type(float)), axis=-1)
  log_py = jnp.take_along_axis(log_p, jnp.asarray(labels)[..., None], axis=-1)[..., 0]
  weight = 1.0 - _theta(log_py - math.log(margin))
  return -jax.lax.stop_gradient(weight) * log_py


def soft_accuracy_loss(logits: chex.Array, labels: chex.Array) -> jax.Array:
  """1 - softmax(logits)_y: one minus a smooth accuracy."""
  _check_labels("soft_accuracy_loss", logits, labels)
  p = jax.nn.softmax(jnp.asarray(logits, jnp.result_type(float)), axis=-1)
  return 1.0 - jnp.take_along_axis(p, jnp.asarray(labels)[..., None], axis=-1)[..., 0]


def hinge_loss(scores: chex.Array, labels_pm1: chex.Array) -> jax.Array:
  """Binary hinge loss max(0, 1 - y f) with labels in {-1, +1}."""
  _check_same_shape("hinge_loss", scores, labels_pm1)
  if _concrete(labels_pm1):
    if not np.all(np.isin(np.asarray(labels_pm1), (-1, 1))):
      raise ValueError(f"hinge_loss: labels_pm1 must be -1 or +1, got {np.unique(np.asarray(labels_pm1))[:5]}")
  else:
    checkify.debug_check(jnp.all(jnp.abs(jnp.asarray(labels_pm1)) == 1), "hinge_loss: labels_pm1 must be -1 or +1")
  return jax.nn.relu(1.0 - labels_pm1 * scores)


def _gauss_hermite(num_points: int):
  x, w = np.polynomial.hermite.hermgauss(num_points)
  # E_{t ~ N(0,1)}[f(t)] = sum_k w_k / sqrt(pi) f(sqrt(2) x_k)
  return np.sqrt(2.0) * x, np.log(w) - 0.5 * np.log(np.pi)


def exact_log_probability(mu: chex.Array, sigma: chex.Array, labels: chex.Array, *,
                          num_points: int = 32, margin: float | None = None) -> jax.Array:
  """log p(y|x) of EXACT (Karpukhin et al. 2022, arXiv 2205.09615; docs/techniques.md#exact).

      p(y|x) = P(y = argmax_i mu_i / sigma + eps_i) = E_{t~N(0,1)} prod_{i != y} Phi(d_i + t),
      d_i = min(mu_y - mu_i, margin) / sigma,

  by Gauss-Hermite quadrature with `num_points` nodes, summed in log space (log_ndtr, logsumexp), so it stays
  finite and differentiable for large margins of either sign. mu: [..., C], labels: [...], sigma: [...] per
  example or a scalar (> 0; the paper's tables schedule a scalar sigma, `jaxtricks.optim.exact_sigma_schedule`).
  `margin` (the paper's): gaps above it are clipped before dividing by sigma, so an example already won by more
  than `margin` gives no gradient through that gap; None: no clip.
  """
  _check_labels("exact_probability", mu, labels)
  _check_num_points("exact_probability", num_points)
  if jnp.shape(sigma) not in ((), jnp.shape(labels)):
    raise ValueError(f"exact_probability: sigma must be a scalar or of shape {jnp.shape(labels)}, "
                     f"got {jnp.shape(sigma)}")
  _check_sigma("exact_probability", sigma)
  if margin is not None and not margin > 0:
    raise ValueError(f"exact_probability: margin must be positive (or None), got {margin}")
  mu = jnp.asarray(mu, jnp.result_type(float))
  labels = jnp.asarray(labels)
  sigma = jnp.broadcast_to(jnp.asarray(sigma, mu.dtype), jnp.shape(labels))
  mu_y = jnp.take_along_axis(mu, labels[..., None], axis=-1)
  gaps = mu_y - mu if margin is None else jnp.minimum(mu_y - mu, margin)
  d = gaps / sigma[..., None]                                            # [..., C]; d_y = 0
  not_y = ~jax.nn.one_hot(labels, mu.shape[-1], dtype=bool)              # [..., C]
  # Change of variable t = s + c (exact for any c): E_t[g(t)] = E_s[exp(-c s - c^2/2) g(s + c)]. Centring the
  # nodes near the integrand's peak, c = -min_i d_i / 2 when a wrong class leads, keeps the tails accurate.
  c = jax.lax.stop_gradient(jax.nn.relu(-jnp.min(jnp.where(not_y, d, jnp.inf), axis=-1)) / 2)[..., None]
  s, log_w = (jnp.asarray(a, mu.dtype).reshape((1,) * (d.ndim - 1) + (num_points,)) for a in _gauss_hermite(num_points))
  log_phi = log_ndtr(d[..., None, :] + (s + c)[..., None])               # [..., K, C]
  log_prod = jnp.sum(jnp.where(not_y[..., None, :], log_phi, 0.0), axis=-1)   # [..., K]
  return jnp.minimum(jax.nn.logsumexp(log_prod + log_w - c * s - c**2 / 2, axis=-1), 0.0)


def exact_probability(mu: chex.Array, sigma: chex.Array, labels: chex.Array, *, num_points: int = 32,
                      margin: float | None = None) -> jax.Array:
  """p(y|x) of EXACT; see `exact_log_probability`."""
  return jnp.exp(exact_log_probability(mu, sigma, labels, num_points=num_points, margin=margin))


def exact_loss(mu, sigma, labels, *, num_points: int = 32, margin: float | None = None) -> jax.Array:
  """EXACT's loss per example, -p(y|x); its batch mean is the paper's -E[p] (1 - E[p] up to a constant)."""
  return -exact_probability(mu, sigma, labels, num_points=num_points, margin=margin)


def exact_log_mean_loss(mu, sigma, labels, *, num_points: int = 32, margin: float | None = None) -> jax.Array:
  """-log of the batch mean of p(y|x) (the paper's variant): a scalar, not per example."""
  log_p = exact_log_probability(mu, sigma, labels, num_points=num_points, margin=margin)
  return -(jax.nn.logsumexp(log_p) - math.log(log_p.size))


def exact_log_loss(mu, sigma, labels, *, num_points: int = 32, margin: float | None = None) -> jax.Array:
  """-log p(y|x) per example: the seed's principle (kexue.fm/archives/9098) applied to EXACT."""
  return -exact_log_probability(mu, sigma, labels, num_points=num_points, margin=margin)


def logit_batchnorm(logits_BC: chex.Array, *, eps: float = 1e-6) -> jax.Array:
  """(logits - mean) / (eps + std) with ONE scalar mean and std over the whole [B, C] batch, no parameters: what
  EXACT's authors apply to the logits before the loss (github ivan-chai/exact). Not per example: a batch function."""
  x = jnp.asarray(logits_BC, jnp.result_type(float))
  return (x - x.mean()) / (eps + x.std())


def multiclass_hinge_loss(logits: chex.Array, labels: chex.Array, *, margin: float = 1.0) -> jax.Array:
  """Crammer-Singer multi-class hinge, per example: max(0, margin + max_{i != y} l_i - l_y) (the baseline the
  EXACT paper compares with; its margin 5 on MNIST, 1 on CIFAR-10)."""
  _check_labels("multiclass_hinge_loss", logits, labels)
  logits = jnp.asarray(logits, jnp.result_type(float))
  labels = jnp.asarray(labels)
  l_y = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  others = jnp.where(jax.nn.one_hot(labels, logits.shape[-1], dtype=bool), -jnp.inf, logits)
  return jax.nn.relu(margin + others.max(axis=-1) - l_y)


def split_sigma_head(outputs_BK: chex.Array, *, num_classes: int) -> tuple[jax.Array, jax.Array | None]:
  """A classifier's outputs as (logits or EXACT's mu [B, C], EXACT's sigma [B] or None).

  With C + 1 outputs the last is EXACT's learned sigma head: sigma = softplus(output) + 1e-3 (the unscheduled,
  learned-sigma form; the paper's tables schedule sigma instead). With C outputs there is no sigma."""
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
    raise ValueError(f"split_sigma_head: num_classes must be a positive integer, got {num_classes!r}")
  if jnp.ndim(outputs_BK) < 1:
    raise ValueError(f"split_sigma_head: outputs need a last axis of {num_classes} or {num_classes + 1}, got shape "
                     f"{jnp.shape(outputs_BK)}")
  k = jnp.shape(outputs_BK)[-1]
  if k == num_classes:
    return outputs_BK, None
  if k != num_classes + 1:
    raise ValueError(f"split_sigma_head: {k} outputs, expected {num_classes} or {num_classes + 1}")
  return outputs_BK[..., :num_classes], jax.nn.softplus(outputs_BK[..., num_classes]) + 1e-3


def model_nll(outputs_BK: chex.Array, labels: chex.Array, *, num_classes: int) -> jax.Array:
  """-log p(y|x) per example under the model's own reading of its outputs: the softmax of the logits, or
  EXACT's p when the outputs carry a sigma head (split_sigma_head)."""
  logits, sigma = split_sigma_head(outputs_BK, num_classes=num_classes)
  if sigma is None:
    _check_labels("model_nll", logits, labels)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return exact_log_loss(logits, sigma, labels)
