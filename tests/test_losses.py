"""Losses against independent float64 references, Monte Carlo, closed forms and docs/techniques.md#exact's toy example."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental import checkify
from jax.test_util import check_grads
from scipy.stats import norm

from jaxtricks import losses


def _theta(t):
  return (np.sign(t) + 1) / 2


def keras_margin_bce(p, y, m):
  """The seed's Keras loss in float64: -lambda(y, p)(y log p + (1 - y) log(1 - p)), without its +1e-8."""
  lam = 1 - _theta(y - m) * _theta(p - m) - _theta(1 - m - y) * _theta(1 - m - p)
  return -lam * (y * np.log(p) + (1 - y) * np.log(1 - p))


class TestMarginBinaryCrossEntropy:

  @pytest.mark.parametrize("m", [0.6, 0.75, 0.9])
  def test_equals_seed_formula(self, m):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, 1000).astype(np.float32)
    labels = rng.integers(0, 2, 1000).astype(np.float32)
    t = np.float32(np.log(m / (1 - m)))
    logits[:4] = [t, -t, t, -t]            # exactly on the boundaries p = m and p = 1 - m
    labels[:4] = [1, 0, 0, 1]
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    p[:4] = [m, 1 - m, m, 1 - m]
    expected = keras_margin_bce(p, labels, m)
    got = jax.jit(lambda a, b: losses.margin_binary_cross_entropy(a, b, margin=m))(logits, labels)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)
    # at the boundary the weight is 1/2 for the class that sits on it, 1 for the other
    ce = -np.log(np.array([m, m, 1 - m, 1 - m]))
    np.testing.assert_allclose(got[:4], [ce[0] / 2, ce[1] / 2, ce[2], ce[3]], rtol=1e-5)

  def test_zero_gradient_for_confident_correct(self):
    logits = jnp.array([3.0, -3.0, 0.1, -0.1, 3.0, -3.0])
    labels = jnp.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    g = jax.grad(lambda z: losses.margin_binary_cross_entropy(z, labels, margin=0.6).sum())(logits)
    np.testing.assert_array_equal(g[:2], 0.0)
    assert np.all(np.abs(g[2:]) > 0.1)
    loss = losses.margin_binary_cross_entropy(logits, labels, margin=0.6)
    np.testing.assert_array_equal(loss[:2], 0.0)
    np.testing.assert_allclose(loss[2:], optax.sigmoid_binary_cross_entropy(logits[2:], labels[2:]), rtol=1e-6)

  def test_finite_for_huge_logits(self):
    loss = losses.margin_binary_cross_entropy(jnp.array([200.0, -200.0]), jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(loss, [200.0, 200.0])

  @pytest.mark.parametrize("m", [0.5, 1.0, 0.3, 1.2])
  def test_margin_out_of_range(self, m):
    with pytest.raises(ValueError, match=r"margin must be in \(0.5, 1\)"):
      losses.margin_binary_cross_entropy(jnp.zeros(2), jnp.zeros(2), margin=m)

  def test_shape_mismatch(self):
    with pytest.raises(ValueError, match="shapes differ"):
      losses.margin_binary_cross_entropy(jnp.zeros(3), jnp.zeros(2))

  def test_vmap_and_gradient(self):
    z = jnp.array([[0.1, -0.3], [1.0, 0.2]])
    y = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    f = lambda a, b: losses.margin_binary_cross_entropy(a, b, margin=0.6)
    np.testing.assert_allclose(jax.vmap(f)(z, y), f(z, y), rtol=1e-6)
    check_grads(lambda a: f(a, y), (z,), order=2, modes=["rev"])


class TestMarginSoftmaxCrossEntropy:

  def test_values_and_truncation(self):
    logits = jnp.array([[4.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 3.0, 0.0]])
    labels = jnp.array([0, 0, 0])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    got = losses.margin_softmax_cross_entropy(logits, labels, margin=0.9)
    np.testing.assert_allclose(got, [0.0, ce[1], ce[2]], rtol=1e-6)     # p_y = 0.965 > 0.9 -> 0
    g = jax.grad(lambda z: losses.margin_softmax_cross_entropy(z, labels, margin=0.9).sum())(logits)
    np.testing.assert_array_equal(g[0], 0.0)
    assert np.abs(g[1]).sum() > 0.1

  def test_boundary_weight_half(self):
    logits = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
    got = losses.margin_softmax_cross_entropy(logits, jnp.array([0]), margin=float(jax.nn.softmax(logits)[0, 0]))
    np.testing.assert_allclose(got, [0.5 * np.log(2)], rtol=1e-5)

  def test_shape_mismatch(self):
    with pytest.raises(ValueError, match="need labels of shape"):
      losses.margin_softmax_cross_entropy(jnp.zeros((4, 3)), jnp.zeros(3, int), margin=0.6)


def test_soft_accuracy_loss():
  logits = jnp.array([[0.0, np.log(3.0)], [5.0, 5.0]])
  np.testing.assert_allclose(losses.soft_accuracy_loss(logits, jnp.array([1, 0])), [0.25, 0.5], rtol=1e-6)
  check_grads(lambda z: losses.soft_accuracy_loss(z, jnp.array([1, 0])), (logits,), order=2, modes=["rev"])


class TestExact:

  def test_two_classes_closed_form(self):
    delta = jnp.array([-40.0, -5.0, -1.0, 0.0, 0.3, 2.0, 8.0])
    sigma = jnp.array([1.0, 0.5, 2.0, 1.0, 0.1, 3.0, 1.0])
    mu = jnp.stack([delta, jnp.zeros_like(delta)], -1)
    log_p = losses.exact_log_probability(mu, sigma, jnp.zeros(7, int))
    expected = norm.logcdf(np.asarray(delta, np.float64) / (np.sqrt(2) * np.asarray(sigma)))
    np.testing.assert_allclose(log_p, expected, rtol=1e-4, atol=1e-6)

  @pytest.mark.parametrize("num_classes", [2, 10, 100])
  def test_monte_carlo(self, num_classes):
    rng = np.random.default_rng(num_classes)
    mu = rng.normal(0, 2, (3, num_classes))
    sigma = np.array([0.5, 1.0, 2.0])
    labels = np.array([0, 1, 2]) % num_classes
    p = np.asarray(losses.exact_probability(jnp.asarray(mu, jnp.float32), jnp.asarray(sigma, jnp.float32),
                                            jnp.asarray(labels)))
    n, hits = 5 * 10**5, np.zeros(3)   # float32 draws: half the time of float64's, the same argmax
    scaled = (mu / sigma[:, None]).astype(np.float32)
    for _ in range(10):
      eps = rng.standard_normal((n // 10, 3, num_classes), dtype=np.float32)
      eps += scaled
      hits += (np.argmax(eps, axis=-1) == labels).sum(0)
    p_mc = hits / n
    band = 3 * np.sqrt(np.maximum(p_mc * (1 - p_mc), 1e-12) / n) + 1e-5
    assert np.all(np.abs(p - p_mc) <= band), (p, p_mc, band)

  def test_probabilities_sum_to_one_and_grads(self):
    mu = jax.random.normal(jax.random.PRNGKey(0), (4, 7)) * 3
    sigma = jnp.array([0.3, 1.0, 2.0, 5.0])
    total = sum(losses.exact_probability(mu, sigma, jnp.full(4, c)) for c in range(7))
    np.testing.assert_allclose(total, 1.0, atol=2e-5)
    labels = jnp.array([0, 3, 6, 2])
    check_grads(lambda m, s: losses.exact_log_probability(m, s, labels), (mu, sigma), order=1, modes=["rev"],
                atol=5e-2, rtol=5e-2)

  def test_stays_finite_for_large_margins(self):
    mu = jnp.array([[0.0, 300.0, -5.0], [300.0, 0.0, 0.0]])
    f = lambda m: losses.exact_log_loss(m, jnp.ones(2), jnp.array([0, 0])).sum()
    value, grad = jax.value_and_grad(f)(mu)
    assert np.isfinite(value) and value > 1000
    chex.assert_tree_all_finite(grad)
    assert grad[0, 1] > 0           # pushes the wrong leader down

  def test_loss_forms(self):
    mu = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    sigma, labels = jnp.ones(5), jnp.array([0, 1, 2, 0, 1])
    jit = jax.jit   # (each form one compiled program, not one per operation)
    p = jit(losses.exact_probability)(mu, sigma, labels)
    np.testing.assert_allclose(jit(losses.exact_loss)(mu, sigma, labels), -p, rtol=1e-6)
    np.testing.assert_allclose(jit(losses.exact_log_loss)(mu, sigma, labels), -np.log(p), rtol=1e-5)
    np.testing.assert_allclose(jit(losses.exact_log_mean_loss)(mu, sigma, labels), -np.log(np.mean(p)), rtol=1e-5)
    chex.assert_shape(jit(losses.exact_loss)(mu, sigma, labels), (5,))
    vm = jit(jax.vmap(lambda m, s, y: losses.exact_loss(m[None], s[None], y[None])[0]))(mu, sigma, labels)
    np.testing.assert_allclose(vm, -p, rtol=1e-6)

  def test_shape_errors(self):
    with pytest.raises(ValueError, match="sigma must be a scalar or of shape"):
      losses.exact_probability(jnp.zeros((4, 3)), jnp.ones(3), jnp.zeros(4, int))
    with pytest.raises(ValueError, match="need labels of shape"):
      losses.exact_probability(jnp.zeros((4, 3)), jnp.ones(4), jnp.zeros(3, int))


class TestToyExample:
  """docs/techniques.md#exact: points (-0.25, -1), (0, -1), (0.25, +1), f(x) = k (x - b); accuracy 100% iff b in (0, 0.25)."""
  x = jnp.array([-0.25, 0.0, 0.25])
  y = jnp.array([-1.0, -1.0, 1.0])
  bs = jnp.linspace(-0.5, 2.0, 250001)

  def _argmin(self, f):
    values = jax.vmap(f)(self.bs)
    return float(self.bs[jnp.argmin(values)]), values

  def test_sigmoid_cross_entropy(self):
    b, _ = self._argmin(lambda b: optax.sigmoid_binary_cross_entropy(self.x - b, (self.y + 1) / 2).sum())
    assert abs(b - 0.70) < 0.005 and not 0 < b < 0.25

  def test_hinge_minimum_set(self):
    _, values = self._argmin(lambda b: losses.hinge_loss(self.x - b, self.y).sum())
    best = self.bs[values <= values.min() + 1e-5]
    np.testing.assert_allclose([best.min(), best.max()], [0.75, 1.0], atol=1e-4)

  def test_temperature_fixes_cross_entropy(self):
    b, _ = self._argmin(lambda b: optax.sigmoid_binary_cross_entropy(10 * (self.x - b), (self.y + 1) / 2).sum())
    assert abs(b - 0.131) < 0.001 and 0 < b < 0.25

  def test_exact_with_learned_sigma_reaches_full_accuracy(self):
    labels = (self.y > 0).astype(jnp.int32)

    def loss(p):
      mu = jnp.stack([jnp.zeros(3), self.x - p["b"]], -1)
      return losses.exact_loss(mu, jnp.exp(p["log_sigma"]) * jnp.ones(3), labels).mean()

    params = {"b": jnp.array(0.7), "log_sigma": jnp.array(0.0)}    # start at cross-entropy's answer
    opt = optax.adam(0.01)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
      grads = jax.grad(loss)(params)
      updates, state = opt.update(grads, state)
      return optax.apply_updates(params, updates), state

    for _ in range(1000):
      params, state = step(params, state)
    predictions = jnp.sign(self.x - params["b"])
    assert bool(jnp.all(predictions == self.y)), params


class TestExactPublishedForm:
  """The options of EXACT as its authors train it: a scalar (scheduled) sigma, the margin clip, logit BN."""

  def test_scalar_sigma_equals_per_example_sigma(self):
    mu = jax.random.normal(jax.random.PRNGKey(0), (5, 4))
    y = jnp.array([0, 1, 2, 3, 0])
    np.testing.assert_allclose(losses.exact_log_probability(mu, 2.5, y),
                               losses.exact_log_probability(mu, jnp.full(5, 2.5), y), rtol=1e-6)

  def test_margin_clip_has_no_gradient_beyond_the_margin(self):
    mu = jnp.array([[3.0, 0.2, 2.9, -4.0]])                        # gaps to class 0: -, 2.8, 0.1, 7.0
    y = jnp.array([0])
    grad = jax.grad(lambda m: losses.exact_log_probability(m, 1.0, y, margin=0.5).sum())(mu)[0]
    assert float(grad[1]) == 0.0 and float(grad[3]) == 0.0          # gaps 2.8 and 7.0 > 0.5: clipped
    assert float(grad[2]) < 0.0                                     # gap 0.1: raising the rival lowers p
    # the clipped value: every gap above the margin counts as the margin itself
    clipped = jnp.array([[0.5, 0.0, 0.4, 0.0]])                     # gaps 0.5, 0.1, 0.5 to class 0
    np.testing.assert_allclose(losses.exact_log_probability(mu, 1.0, y, margin=0.5),
                               losses.exact_log_probability(clipped, 1.0, y), rtol=1e-6)

  def test_logit_batchnorm_uses_one_scalar_mean_and_std(self):
    x = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 9.0]])
    z = losses.logit_batchnorm(x)
    np.testing.assert_allclose(float(z.mean()), 0.0, atol=1e-6)
    np.testing.assert_allclose(float(z.std()), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(z), (np.asarray(x) - 4.0) / (1e-6 + np.asarray(x).std()), rtol=1e-6)

  def test_multiclass_hinge_known_values(self):
    logits = jnp.array([[2.0, 0.5, 1.8], [0.0, 3.0, 1.0]])
    y = jnp.array([0, 1])
    # example 0: 1 + 1.8 - 2.0 = 0.8; example 1: 1 + 1.0 - 3.0 < 0 -> 0
    np.testing.assert_allclose(losses.multiclass_hinge_loss(logits, y), [0.8, 0.0], rtol=1e-6)
    np.testing.assert_allclose(losses.multiclass_hinge_loss(logits, y, margin=5.0), [4.8, 3.0], rtol=1e-6)


class TestBoundaries:
  """Issue 36, item 4: static arguments are refused with a message naming them; label values are checked now for
  NumPy input and under checkify for traced input (a no-op in the compiled program otherwise)."""
  mu = np.zeros((2, 3), np.float32)
  labels = np.array([0, 2])

  @pytest.mark.parametrize("sigma", [-1.0, 0.0, np.float32(-2.0), np.array([1.0, -1.0]), float("nan"), jnp.float32(-1)])
  @pytest.mark.parametrize("fn", [losses.exact_loss, losses.exact_probability, losses.exact_log_loss])
  def test_sigma_not_positive(self, fn, sigma):
    with pytest.raises(ValueError, match="sigma must be positive"):
      fn(self.mu, sigma, self.labels)

  @pytest.mark.parametrize("num_points", [0, -3, 2.5, True])
  def test_num_points(self, num_points):
    with pytest.raises(ValueError, match="num_points .* must be a positive integer"):
      losses.exact_loss(self.mu, 1.0, self.labels, num_points=num_points)

  @pytest.mark.parametrize("fn", [
      lambda l, y: losses.margin_softmax_cross_entropy(l, y, margin=0.5), losses.soft_accuracy_loss,
      losses.multiclass_hinge_loss, lambda l, y: losses.exact_loss(l, 1.0, y)])
  def test_labels(self, fn):
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\), got values from -1 to 2"):
      fn(self.mu, np.array([-1, 2]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\), got values from 0 to 3"):
      fn(self.mu, [0, 3])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\), got values from 0 to 3"):
      fn(self.mu, jnp.array([0, 3]))   # a jax.Array outside any trace: checked at once too
    with pytest.raises(ValueError, match="labels must be integer class indices"):
      fn(self.mu, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="need a class axis"):
      fn(jnp.zeros(()), jnp.zeros((), jnp.int32))
    # traced labels: unchecked in the plain program, a FailedCheck under checkify
    loss = jax.jit(lambda l, y: fn(l, y).sum())
    assert np.isfinite(loss(self.mu, jnp.array([0, 2])))
    checked = jax.jit(checkify.checkify(loss, errors=checkify.user_checks))
    assert checked(self.mu, jnp.array([0, 2]))[0].get() is None
    assert "labels must be in [0, 3), got values from -1 to 2" in checked(self.mu, jnp.array([-1, 2]))[0].get()
    assert "got values from 0 to 3" in checked(self.mu, jnp.array([0, 3]))[0].get()

  def test_traced_sigma_under_checkify(self):
    loss = jax.jit(checkify.checkify(lambda s: losses.exact_loss(self.mu, s, self.labels).sum(),
                                     errors=checkify.user_checks))
    assert loss(jnp.float32(1.0))[0].get() is None
    assert "sigma must be positive, got a minimum of -1.0" in loss(jnp.float32(-1.0))[0].get()

  def test_binary_labels(self):
    with pytest.raises(ValueError, match=r"labels must be in \[0, 1\]"):
      losses.margin_binary_cross_entropy(np.zeros(2, np.float32), np.array([0.0, 2.0]))
    with pytest.raises(ValueError, match="labels_pm1 must be -1 or \\+1"):
      losses.hinge_loss(np.zeros(2), np.array([0.0, 1.0]))
    checked = jax.jit(checkify.checkify(lambda y: losses.margin_binary_cross_entropy(jnp.zeros(2), y).sum(),
                                        errors=checkify.user_checks))
    assert "labels must be in [0, 1]" in checked(jnp.array([0.0, 2.0]))[0].get()

  def test_split_sigma_head(self):
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
      losses.split_sigma_head(jnp.zeros((2, 3)), num_classes=0)

  def test_checks_leave_the_compiled_program_as_it_was(self, monkeypatch):
    """The debug_checks add nothing to what XLA runs: the optimized program with them equals the one without."""
    y = jnp.array([0, 2])

    def optimized():
      f = jax.jit(jax.grad(lambda l: (losses.exact_loss(l, 1.0, y) + losses.margin_softmax_cross_entropy(
          l, y, margin=0.5)).sum()))
      text = f.lower(self.mu).compile().as_text()   # its instructions, without source locations
      return [re.sub(r", metadata=\{[^}]*\}", "", line) for line in text.splitlines() if " = " in line]
    with_checks = optimized()
    monkeypatch.setattr(losses.checkify, "debug_check", lambda *a, **k: None)
    assert optimized() == with_checks
