import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtricks.data import pipeline


def _batches(n=100, batch_size=10, seed=0, transform=None):
  data = {"index": jnp.arange(n), "x": jnp.arange(n, dtype=jnp.float32) * 2}
  return pipeline.DeviceBatches(data, batch_size=batch_size, key=jax.random.PRNGKey(seed), transform=transform)


def _epoch(batches, epoch):
  s = batches.steps_per_epoch
  return np.concatenate([np.asarray(batches(epoch * s + i)["index"]) for i in range(s)])


def test_every_example_once_per_epoch():
  b = _batches()
  for epoch in range(3):
    order = _epoch(b, epoch)
    assert sorted(order.tolist()) == list(range(100))
  batch = b(7)
  np.testing.assert_array_equal(batch["x"], 2 * batch["index"])   # arrays stay aligned


def test_partial_batch_dropped_no_repeats():
  b = _batches(n=105, batch_size=10)
  assert b.steps_per_epoch == 10
  order = _epoch(b, 0)
  assert len(set(order.tolist())) == 100


def test_epochs_differ_and_batches_are_a_function_of_key_and_step():
  b = _batches()
  assert not np.array_equal(_epoch(b, 0), _epoch(b, 1))
  # a fresh iterator (as after a resume) gives the same batch for the same step, in any visiting order
  fresh = _batches()
  np.testing.assert_array_equal(fresh(23)["index"], b(23)["index"])
  np.testing.assert_array_equal(fresh(3)["index"], b(3)["index"])
  assert not np.array_equal(_batches(seed=1)(3)["index"], b(3)["index"])


def test_transform_runs_inside_the_gather_with_a_per_step_key():
  b = _batches(transform=lambda key, batch: {**batch, "noise": jax.random.uniform(key, (10,))})
  assert b(0)["noise"].shape == (10,)
  assert not np.allclose(b(0)["noise"], b(1)["noise"])
  np.testing.assert_array_equal(b(5)["noise"], b(5)["noise"])


def test_random_flip_is_a_flip():
  x = jax.random.uniform(jax.random.PRNGKey(0), (200, 4, 5, 2))
  y = pipeline.random_flip(jax.random.PRNGKey(1), x)
  same = np.all(np.asarray(y) == np.asarray(x), axis=(1, 2, 3))
  flipped = np.all(np.asarray(y) == np.asarray(x)[:, :, ::-1, :], axis=(1, 2, 3))
  assert np.all(same ^ flipped)          # each image exactly one of the two
  assert 60 < flipped.sum() < 140         # about half flipped
  np.testing.assert_array_equal(pipeline.random_flip(jax.random.PRNGKey(1), y), x)   # same key: an involution


def test_resize_rgb():
  x = jnp.ones((3, 28, 28, 1)) * jnp.arange(3.0)[:, None, None, None]
  y = jax.jit(pipeline.resize_rgb, static_argnums=1)(x, 56)
  chex.assert_shape(y, (3, 56, 56, 3))
  np.testing.assert_allclose(y, jnp.broadcast_to(jnp.arange(3.0)[:, None, None, None], y.shape), atol=1e-6)
  ramp = jnp.broadcast_to(jnp.linspace(0, 1, 28)[None, None, :, None], (1, 28, 28, 1))
  z = pipeline.resize_rgb(ramp, 56)
  assert np.all(np.diff(np.asarray(z[0, 0, :, 0])) >= 0)   # resizing keeps the left-right order


def test_to_float():
  x = jnp.array([[0, 255]], jnp.uint8)
  np.testing.assert_allclose(pipeline.to_float(x), [[0.0, 1.0]])


def test_eval_batches_cover_each_example_once():
  data = {"index": jnp.arange(23)}
  seen = []
  for batch, mask in pipeline.eval_batches(data, batch_size=10):
    chex.assert_shape(batch["index"], (10,))
    seen += np.asarray(batch["index"])[np.asarray(mask)].tolist()
  assert seen == list(range(23))


def test_bad_batch_size():
  with pytest.raises(ValueError, match="batch size 0"):
    _batches(batch_size=0)


def test_random_crop_is_a_shift_of_the_zero_padded_image():
  x = jax.random.uniform(jax.random.PRNGKey(0), (16, 8, 8, 1)) + 1.0      # no zeros inside the images
  y = pipeline.random_crop(jax.random.PRNGKey(1), x, pad=2)
  chex.assert_shape(y, x.shape)
  padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)))
  shifts = set()
  for i in range(16):   # each output is one 8x8 window of its own padded image
    hits = [(dy, dx) for dy in range(5) for dx in range(5)
            if np.array_equal(padded[i, dy:dy + 8, dx:dx + 8], np.asarray(y[i]))]
    assert len(hits) == 1, i
    shifts.add(hits[0])
  assert len(shifts) > 3     # the windows differ between images


def test_random_erasing_fills_one_rectangle_per_erased_image():
  x = jnp.full((64, 28, 28, 1), -1.0)           # erased pixels are in [0, 1], kept ones stay -1
  y = np.asarray(pipeline.random_erasing(jax.random.PRNGKey(0), x, prob=0.5))
  erased = y >= 0
  counts = erased.reshape(64, -1).sum(-1)
  assert 16 < (counts > 0).sum() < 48           # about half the images
  for i in np.nonzero(counts)[0]:
    rows, cols = np.nonzero(erased[i, :, :, 0])
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert box == counts[i]                     # a filled rectangle
    assert 0.02 * 784 * 0.5 <= counts[i] <= 0.4 * 784 * 1.1
  assert (y[~erased] == -1).all()


def test_rotate_shift_known_answers():
  """90 degrees is np.rot90 (counter-clockwise as displayed), an integer shift moves pixels with zero fill, and
  no rotation and no shift gives the image back."""
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 7, 7, 3)) + 1.0
  zero_B, zero_B2 = jnp.zeros(2), jnp.zeros((2, 2))
  np.testing.assert_allclose(pipeline.rotate_shift(x, zero_B, zero_B2), x, atol=1e-6)
  turned = pipeline.rotate_shift(x, jnp.full(2, jnp.pi / 2), zero_B2)   # the border may read just outside: 0
  np.testing.assert_allclose(turned[:, 1:-1, 1:-1], np.rot90(np.asarray(x), axes=(1, 2))[:, 1:-1, 1:-1], atol=1e-5)
  shifted = np.asarray(pipeline.rotate_shift(x, zero_B, jnp.array([[1.0, -2.0]] * 2)))   # 1 down, 2 left
  np.testing.assert_allclose(shifted[:, 1:, :-2], np.asarray(x)[:, :-1, 2:], atol=1e-6)
  assert (shifted[:, 0] == 0).all() and (shifted[:, :, -2:] == 0).all()


def test_random_rotate_shift_draws_one_transform_per_image_within_its_bounds():
  x = jnp.ones((64, 28, 28, 1))
  y = np.asarray(pipeline.random_rotate_shift(jax.random.PRNGKey(0), x, max_degrees=20.0, max_shift=0.2))
  chex.assert_shape(y, x.shape)
  kept = (y > 0.5).reshape(64, -1).mean(-1)     # the share of the image still inside the frame
  assert kept.min() > 0.45 and kept.max() < 1.0                 # shifts of <= 20% on each axis
  assert len(np.unique(np.round(kept, 4))) > 50                 # a transform of its own per image
  same = pipeline.random_rotate_shift(jax.random.PRNGKey(0), x[:1], max_degrees=0.0, max_shift=0.0)
  np.testing.assert_allclose(same, x[:1], atol=1e-6)
