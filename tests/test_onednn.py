"""jaxtricks.onednn: oneDNN's convolutions through XLA's FFI equal XLA's, forward and both gradients."""

import os
import shutil
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtricks import onednn
from jaxtricks.models.dcgan import Discriminator, Generator

HEADER = Path("/usr/include/oneapi/dnnl/dnnl.hpp")


@pytest.fixture(scope="module", autouse=True)
def built():
  if not onednn.available():
    if HEADER.is_file() and shutil.which(os.environ.get("CXX", "g++")):   # make's $(CXX)
      pytest.fail(f"oneDNN's headers and a compiler are here but {onednn.LIBRARY} is not: `make onednn` failed")
    pytest.skip("no oneDNN here (libdnnl-dev) or no C++ compiler: the kernels are not built on this machine")


def lax_conv(x, w, stride, padding):
  return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("shape,stride,padding", [((3, 9, 7, 5, 6, 5), 2, "SAME"), ((2, 8, 8, 4, 3, 3), 1, [(2, 0), (1, 1)]),
                                                  ((2, 7, 7, 8, 4, 3), 1, "VALID"), ((2, 6, 6, 3, 4, 2), 1, [(0, 1), (0, 1)])])
def test_conv2d_and_its_gradients_equal_xlas_in_float32(shape, stride, padding):
  b, h, w, c, o, k = shape
  kx, kw, kg = jax.random.split(jax.random.PRNGKey(0), 3)
  x, kernel = jax.random.normal(kx, (b, h, w, c)), jax.random.normal(kw, (k, k, c, o))
  want = lax_conv(x, kernel, stride, padding)
  got = jax.jit(lambda x, w: onednn.conv2d(x, w, stride, padding))(x, kernel)
  chex.assert_shape(got, want.shape)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  g = jax.random.normal(kg, want.shape)
  loss = lambda f: lambda x, w: (f(x, w, stride, padding) * g).sum()
  for a, e in zip(jax.jit(jax.grad(loss(onednn.conv2d), (0, 1)))(x, kernel), jax.grad(loss(lax_conv), (0, 1))(x, kernel)):
    np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4)


def test_conv2d_in_bfloat16_is_within_bf16_rounding_of_float32():
  x = jax.random.uniform(jax.random.PRNGKey(1), (4, 14, 14, 16))
  w = jax.random.normal(jax.random.PRNGKey(2), (5, 5, 16, 8)) * 0.1
  got = onednn.conv2d(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), 2)
  assert got.dtype == jnp.bfloat16
  want = lax_conv(x, w, 2, "SAME")
  assert float(jnp.abs(got.astype(jnp.float32) - want).max()) < 0.02 * float(jnp.abs(want).max())
  dw = jax.grad(lambda w: onednn.conv2d(x.astype(jnp.bfloat16), w, 2).astype(jnp.float32).sum())(w.astype(jnp.bfloat16))
  dw_want = jax.grad(lambda w: lax_conv(x, w, 2, "SAME").sum())(w)
  assert float(jnp.abs(dw.astype(jnp.float32) - dw_want).max()) < 0.02 * float(jnp.abs(dw_want).max())


def test_conv2d_refuses_what_it_cannot_compute():
  x = jnp.ones((1, 4, 4, 2))
  with pytest.raises(ValueError, match="both float32 or both bfloat16"):
    onednn.conv2d(x, jnp.ones((3, 3, 2, 2), jnp.bfloat16))
  with pytest.raises(ValueError, match="paddings must be >= 0"):
    onednn.conv2d(x, jnp.ones((3, 3, 2, 2)), 1, [(-1, 1), (1, 1)])
  with pytest.raises(ValueError, match="with x's C"):   # a kernel for other input channels: XLA refuses it too
    onednn.conv2d(x, jnp.ones((3, 3, 3, 2)))
  with pytest.raises(ValueError, match="stride must be an integer >= 1"):
    onednn.conv2d(x, jnp.ones((3, 3, 2, 2)), 0)


def test_dcgan_nets_with_onednn_convolutions_are_the_same_functions():
  """Generator/Discriminator(conv="onednn") take the same parameters and compute what XLA's convolutions do."""
  z = jax.random.normal(jax.random.PRNGKey(0), (3, 100))
  x = jax.random.uniform(jax.random.PRNGKey(1), (3, 28, 28, 1), minval=-1, maxval=1)
  for xla, dnn, inp in ((Generator(width=4), Generator(width=4, conv="onednn"), z),
                        (Discriminator(width=4), Discriminator(width=4, conv="onednn"), x)):
    variables = xla.init(jax.random.PRNGKey(2), inp)
    chex.assert_trees_all_equal_shapes(variables, dnn.init(jax.random.PRNGKey(2), inp))
    np.testing.assert_allclose(dnn.apply(variables, inp, train=False), xla.apply(variables, inp, train=False),
                               rtol=1e-4, atol=1e-5)
    grads = [jax.grad(lambda p, net=net: net.apply({**variables, "params": p}, inp, train=False).sum())(
        variables["params"]) for net in (xla, dnn)]
    chex.assert_trees_all_close(grads[1], grads[0], rtol=1e-4, atol=1e-5)
