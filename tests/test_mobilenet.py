"""MobileNet's depthwise convolution in the shifted-sum form is nn.Conv(feature_group_count=C): same params,
same init, same outputs and gradients; the block schedule helper moves the strides."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtricks.models.mobilenet import MOBILENET_V1_BLOCKS, DepthwiseConv, MobileNetV1, blocks_downsampling_at


@pytest.mark.parametrize("size,kernel,stride", [(8, 3, 1), (7, 3, 2), (9, 5, 3)])
def test_depthwise_conv_equals_grouped_nn_conv(size, kernel, stride):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size + 1, 5))
  ours = DepthwiseConv(kernel, stride)
  ref = nn.Conv(5, (kernel, kernel), (stride, stride), padding="SAME", feature_group_count=5, use_bias=False)
  p_ours, p_ref = ours.init(jax.random.PRNGKey(1), x), ref.init(jax.random.PRNGKey(1), x)
  chex.assert_trees_all_equal(p_ours, p_ref)                     # same parameter tree and init
  np.testing.assert_allclose(ours.apply(p_ref, x), ref.apply(p_ref, x), rtol=1e-5, atol=1e-5)
  loss = lambda m: lambda p, x: jnp.sum(jnp.sin(m.apply(p, x)))
  g_ours = jax.grad(loss(ours), argnums=(0, 1))(p_ref, x)
  g_ref = jax.grad(loss(ref), argnums=(0, 1))(p_ref, x)
  chex.assert_trees_all_close(g_ours, g_ref, rtol=1e-4, atol=1e-4)


def test_mobilenet_shifted_and_conv_forms_are_one_network():
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 28, 28, 3))
  kw = dict(width=0.25, stem_stride=1, blocks=blocks_downsampling_at(1, 3))
  shifted, conv = MobileNetV1(**kw), MobileNetV1(depthwise="conv", **kw)
  v = conv.init(jax.random.PRNGKey(0), x)
  chex.assert_trees_all_equal_structs(shifted.init(jax.random.PRNGKey(0), x), v)
  np.testing.assert_allclose(shifted.apply(v, x), conv.apply(v, x), rtol=1e-4, atol=1e-5)


def test_blocks_downsampling_at_moves_only_the_strides():
  blocks = blocks_downsampling_at(1, 3)
  assert [c for c, _ in blocks] == [c for c, _ in MOBILENET_V1_BLOCKS]
  assert [i for i, (_, s) in enumerate(blocks) if s == 2] == [1, 3]
  assert blocks_downsampling_at(1, 3, 5, 11) == MOBILENET_V1_BLOCKS
