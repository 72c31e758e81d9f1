"""The shared training loop on a toy problem (in process) — resume, divergence guard, workdir checks."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtricks import loop


def _toy(nan_at=None, huge_at=None):
  """Noisy linear regression; the loss is NaN (or huge) at state step `nan_at` (`huge_at`)."""
  w_true = jnp.array([1.0, -2.0, 0.5])

  def init():
    return {"w": jnp.zeros(3), "step": jnp.zeros((), jnp.int32)}

  @jax.jit
  def train_step(state, batch, key):
    def loss_fn(w):
      return jnp.mean((batch["x"] @ w - batch["y"]) ** 2)
    loss, g = jax.value_and_grad(loss_fn)(state["w"])
    w = state["w"] - 0.1 * g + 0.01 * jax.random.normal(key, (3,))
    if nan_at is not None:
      loss = jnp.where(state["step"] == nan_at, jnp.nan, loss)
      w = jnp.where(state["step"] == nan_at, jnp.nan, w)
    if huge_at is not None:
      loss = jnp.where(state["step"] == huge_at, 1e12, loss)
    return {"w": w, "step": state["step"] + 1}, {"loss": loss}

  def batches(step):
    x = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(1), step), (8, 3))
    return {"x": x, "y": x @ w_true}

  return dict(init_fn=init, train_step=train_step, batches=batches, key=jax.random.PRNGKey(0))


def _run(workdir, steps, every=5, hooks=(), fingerprint=None, **toy):
  config = loop.LoopConfig(steps=steps, workdir=str(workdir), checkpoint_every=every, progress=False)
  return loop.run(config, hooks=hooks, fingerprint=fingerprint, **_toy(**toy))


def _lines(workdir):
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_resume_equals_uninterrupted(tmp_path):
  straight = _run(tmp_path / "a", 20)
  _run(tmp_path / "b", 12)      # checkpoints at 5, 10 and the end, 12
  resumed = _run(tmp_path / "b", 20)
  assert int(resumed["step"]) == 20
  np.testing.assert_allclose(resumed["w"], straight["w"], rtol=0, atol=0)
  # metrics.jsonl holds each step once, in order
  steps = [l["step"] for l in _lines(tmp_path / "b") if "loss" in l]
  assert steps == list(range(1, 21))
  # training did something
  assert float(jnp.abs(straight["w"] - jnp.array([1.0, -2.0, 0.5])).max()) < 0.3


@pytest.mark.parametrize("bad", [{"nan_at": 7}, {"huge_at": 7}])
def test_divergence_guard_keeps_last_good_checkpoint(tmp_path, bad):
  with pytest.raises(loop.DivergenceError, match=r"diverged at step 8.*last good checkpoint: step 5") as e:
    _run(tmp_path, 20, **bad)
  assert "\n" not in str(e.value)
  state, _, step = loop.restore(tmp_path, jax.eval_shape(_toy()["init_fn"]))
  assert step == 5 and int(state["step"]) == 5
  assert np.all(np.isfinite(state["w"]))
  # nothing from the failing step was logged as a good step
  assert max(l["step"] for l in _lines(tmp_path) if "loss" in l) < 8


def test_divergence_before_first_checkpoint_says_none(tmp_path):
  with pytest.raises(loop.DivergenceError, match="last good checkpoint: none"):
    _run(tmp_path, 20, nan_at=1)


def test_hooks_see_every_step(tmp_path):
  seen = []
  _run(tmp_path, 7, hooks=[lambda step, state: seen.append((step, int(state["step"])))])
  assert seen == [(s, s) for s in range(1, 8)]


def test_other_configuration_refused(tmp_path):
  _run(tmp_path, 5, fingerprint={"model": "cnn"})
  with pytest.raises(loop.WorkdirError, match="another configuration .*model: 'cnn' there, 'mobilenet' now"):
    _run(tmp_path, 10, fingerprint={"model": "mobilenet"})
  assert loop.checkpoint_manager(tmp_path).latest_step() == 5   # nothing lost


def test_checkpoint_of_another_shape_refused(tmp_path):
  _run(tmp_path, 5)
  abstract = {"w": jax.ShapeDtypeStruct((4,), jnp.float32), "step": jax.ShapeDtypeStruct((), jnp.int32)}
  with pytest.raises(loop.WorkdirError, match="does not fit this model"):
    loop.restore(tmp_path, abstract)


def test_unwritable_workdir(tmp_path):
  (tmp_path / "file").write_text("")
  with pytest.raises(loop.WorkdirError, match="not writable"):
    _run(tmp_path / "file" / "run", 5)


def test_nonpositive_steps(tmp_path):
  with pytest.raises(ValueError, match="steps must be positive"):
    _run(tmp_path, 0)
