"""train.classify end to end: kill and resume, divergence, bad input, models, and the real 1-epoch run."""

import functools
import json
import subprocess
import sys

import chex
import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import REPO, RUN_XLA_FLAGS, child_env, error_lines, make_raw_folder, require_real_data

from jaxtricks import classifier, cli, loop, losses
from jaxtricks.models.mobilenet import MobileNetV1
from jaxtricks.models.vgg import VGGM3
from train import classify


def _env(tmp_path):
  env = child_env(TFDS_DATA_DIR=str(tmp_path / "tfds"), JAXTRICKS_OFFLINE="1")
  env.pop("JAXTRICKS_DATA", None)
  return env


def _final_params(workdir, step):
  tree = ocp.StandardCheckpointer().restore((workdir / "checkpoints" / str(step) / "default").absolute())
  return tree["state"]["params"]


@pytest.fixture
def raw(tmp_path):
  make_raw_folder(tmp_path / "raw")
  return tmp_path


def test_divergence_stops_keeps_checkpoint_and_resumes_with_lower_lr(raw, capsys, monkeypatch):
  """In this process, through main(argv) (the exit code of the real process: test_bad_input_exit_code_of_the_real_process)."""
  monkeypatch.setenv("TFDS_DATA_DIR", str(raw / "tfds"))
  monkeypatch.delenv("JAXTRICKS_DATA", raising=False)
  base = ["--data-dir", str(raw / "raw"), "--batch-size", "16", "--checkpoint-every", "10", "--no-progress",
          "--workdir", str(raw / "run")]
  assert classify.main([*base, "--steps", "20"]) == 0
  capsys.readouterr()
  assert classify.main([*base, "--steps", "40", "--lr", "1e9"]) == cli.EXIT_DIVERGED
  err = capsys.readouterr().err
  assert len(error_lines(err)) == 1, err
  assert "diverged" in err and "last good checkpoint: step 20" in err
  assert classify.main([*base, "--steps", "40", "--lr", "1e-3"]) == 0, capsys.readouterr().err
  params = _final_params(raw / "run", 40)
  chex.assert_tree_all_finite(params)


@pytest.mark.parametrize("args, words", [
    (["--steps", "-5"], "--steps must be positive (or left out: from --epochs)"),
    (["--model", "resnet"], "invalid choice: 'resnet'"),
    (["--batch-size", "0"], "--batch-size must be positive"),
    (["--lr", "fast"], "invalid float value: 'fast'"),
    (["--loss", "margin", "--margin", "1.5"], "--margin must be in (0, 1)"),
    (["--loss", "focal"], "invalid choice: 'focal'"),
    (["--dataset", "mnist", "--data-dir", "/nonexistent"], "--data-dir /nonexistent: no such folder"),
])
def test_bad_input_one_line_exit_2(args, words, tmp_path, capsys, monkeypatch):
  monkeypatch.delenv("JAXTRICKS_DATA", raising=False)
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  rc = cli.main(classify.Config, classify.run, argv=args + ["--workdir", str(tmp_path / "w")], prog="train.classify")
  err = capsys.readouterr().err
  assert rc == cli.EXIT_USAGE
  assert len(err.strip().splitlines()) == 1 and words in err, err


def test_bad_input_exit_code_of_the_real_process(tmp_path):
  p = subprocess.run([sys.executable, "-m", "train.classify", "--epochs", "0"], cwd=REPO, env=_env(tmp_path),
                     capture_output=True, text=True, timeout=120)
  assert p.returncode == 2 and error_lines(p.stderr) == [
      "python -m train.classify: error: --epochs must be positive, got 0.0"]


def test_workdir_of_another_model_refused(raw, capsys, monkeypatch):
  tmp = raw
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp / "tfds"))
  common = ["--data-dir", str(tmp / "raw"), "--workdir", str(tmp / "w"), "--steps", "3", "--no-progress"]
  assert cli.main(classify.Config, classify.run, argv=common) == 0
  rc = cli.main(classify.Config, classify.run, argv=common + ["--model", "mobilenet", "--width", "0.25"])
  assert rc == cli.EXIT_USAGE and "another configuration" in capsys.readouterr().err


@pytest.mark.parametrize("model, size", [("cnn", 28), pytest.param("mobilenet", 32, marks=pytest.mark.slow)])
def test_model_shapes_and_steps_lower_the_loss(model, size):
  # MobileNet's depthwise convolutions as grouped convs, not the CPU's default shifted sums: half the compile, and
  # test_mobilenet shows the two forms are one network
  config = classify.Config(model=model, width=0.25, input_size=max(size, 28), lr=1e-3, depthwise="conv")
  x = jax.random.uniform(jax.random.PRNGKey(0), (8, size, size, 3 if model == "mobilenet" else 1))
  _check_training(config, x)


@pytest.mark.parametrize("loss", ["ce", "margin", "soft_acc", "hinge", "exact", "exact_log_mean", "exact_log"])
def test_every_loss_trains(loss):
  # the hinge's piecewise-linear gradient overshoots at 1e-3 in 8 steps on this toy batch (measured: 1.22 -> 1.71,
  # then down to 0.74 by step 30); at 1e-4 it goes down from the first steps
  config = classify.Config(loss=loss, lr=1e-4 if loss == "hinge" else 1e-3)
  _check_training(config, jax.random.uniform(jax.random.PRNGKey(0), (8, 28, 28, 1)))


def _check_training(config, x):
  y = jnp.arange(8) % 10
  model, tx = classify.make_model(config), classify.optimizer(config, 8)
  state = jax.jit(functools.partial(classifier.init, model=model, x_shape=x.shape, tx=tx))(jax.random.PRNGKey(0))
  outputs = jax.jit(functools.partial(classifier.predict, model))(state, x)   # (compiled: one program each)
  chex.assert_shape(outputs, (8, classify.num_outputs(config)))
  chex.assert_tree_all_finite(outputs)
  step = jax.jit(functools.partial(classify.train_step, config=config, model=model, tx=tx,
                                   sigma_fn=classify.exact_sigma_fn(config, 8)))
  losses = []
  for i in range(8):
    state, metrics = step(state, {"image": x, "label": y}, jax.random.PRNGKey(i))
    losses.append(float(metrics["loss"]))
  chex.assert_tree_all_finite(state.params)
  assert losses[-1] < losses[0], losses


def test_vgg_m3_has_the_layers_of_the_paper():
  """Ten unpadded 3x3 convs of 32, 48, ..., 176 channels without bias, each with BatchNorm (scale and bias), maps
  28 -> 8; the EXACT authors' head (average pool, Dense with bias) or An et al.'s (flatten, Dense without bias,
  BatchNorm on the logits). The counts are summed here from that layer list, not read from the module."""
  channels = [32 + 16 * i for i in range(10)]
  ins = [1, *channels[:-1]]
  body = sum(9 * i * o + 2 * o for i, o in zip(ins, channels))
  x = jnp.zeros((2, 28, 28, 1))
  count = lambda model: sum(a.size for a in jax.tree.leaves(
      jax.eval_shape(model.init, jax.random.PRNGKey(0), x)["params"]))
  assert count(VGGM3()) == body + 176 * 10 + 10
  assert count(VGGM3(head="flatten_bn")) == body + 8 * 8 * 176 * 10 + 2 * 10   # the last map is 8x8
  assert count(classify.make_model(classify.Config(model="vgg_m3"))) == body + 176 * 10 + 10
  model = classify.make_model(classify.Config(model="vgg_m3", loss="exact"))   # EXACT's learned sigma: an 11th output
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  chex.assert_shape(jax.eval_shape(model.apply, variables, x), (2, 11))
  assert [variables["batch_stats"][f"BatchNorm_{i}"]["mean"].shape[0] for i in range(10)] == channels


def test_paper_mnist_recipes_set_the_authors_settings_and_the_exact_one_trains_vgg_m3():
  """The three rows of the EXACT paper's MNIST table, as RECIPES sets them; EXACT's (its most machinery: scheduled
  sigma, margin, logit batch-norm, gradient normalizer) lowers its loss on vgg_m3 at 1/16 width."""
  parse = lambda recipe, *flags: cli.parse(classify.Config, ["--recipe", recipe, *flags], recipes=classify.RECIPES)
  for recipe, loss, lr, clip in (("exact_paper_mnist", "exact", 0.5, 0.0), ("ce_paper_mnist", "ce", 0.5, 10.0),
                                 ("hinge_paper_mnist", "hinge", 0.05, 1.0)):
    c = parse(recipe)
    assert (c.model, c.dataset, c.augment, c.epochs, c.batch_size) == ("vgg_m3", "mnist", "rotate_shift", 150, 256)
    assert (c.optimizer, c.momentum, c.weight_decay, c.schedule, c.lr_final) == ("sgd", 0.9, 1e-4, "exponential", 1e-4)
    assert (c.loss, c.lr, c.grad_clip) == (loss, lr, clip)
  c = parse("exact_paper_mnist", "--width", "0.0625")
  assert (c.exact_sigma, c.exact_sigma_init, c.exact_sigma_final, c.exact_margin) == ("scheduled", 10, 1, 0.5)
  assert c.logit_batchnorm and c.grad_normalizer and parse("hinge_paper_mnist").hinge_margin == 5
  _check_training(c, jax.random.uniform(jax.random.PRNGKey(0), (8, 28, 28, 1)))


def test_exact_head_gives_positive_sigma():
  mu, sigma = losses.split_sigma_head(jnp.array([[0.0] * 10 + [-50.0], [1.0] * 10 + [3.0]]), num_classes=10)
  chex.assert_shape(mu, (2, 10))
  assert float(sigma.min()) > 0 and abs(float(sigma[1]) - (float(jax.nn.softplus(3.0)) + 1e-3)) < 1e-6
  assert losses.split_sigma_head(jnp.zeros((2, 10)), num_classes=10)[1] is None
  with pytest.raises(ValueError, match="expected 10 or 11"):
    losses.split_sigma_head(jnp.zeros((2, 12)), num_classes=10)


def test_mobilenet_width_multiplier_scales_params():
  x = jnp.zeros((1, 56, 56, 3))
  count = lambda m: sum(a.size for a in jax.tree.leaves(jax.eval_shape(m.init, jax.random.PRNGKey(0), x)["params"]))
  full, half = count(MobileNetV1(width=1.0)), count(MobileNetV1(width=0.5))
  assert 3.0e6 < full < 3.4e6     # MobileNet v1 1.0 without the 1000-way top: 3.2M (Howard et al. Table 8: 4.2M with it)
  assert 0.2 < half / full < 0.35  # params scale with width^2


@pytest.mark.realdata
@pytest.mark.slow
def test_cnn_a_ninth_of_an_epoch_reaches_79_percent(tmp_path):
  """The docstring's `--model cnn --epochs 1` (87%) learns within the first ninth of its epoch: a 100-step run ends
  at 81.17% (seed 0, XLA level 1, 2-core Intel Sapphire Rapids VM, 2026-12-05; 156 steps: 81.03%, 312: 85.77%, the
  full epoch 87.54% at step 937, 2026-12-04). The child runs at level 1 (RUN_XLA_FLAGS): the suite's level 0
  doubles its steps' time."""
  require_real_data("fashion_mnist")
  env = child_env(XLA_FLAGS=RUN_XLA_FLAGS)
  p = subprocess.run([sys.executable, "-m", "train.classify", "--model", "cnn", "--steps", "100", "--workdir",
                      str(tmp_path / "run"), "--no-progress"], cwd=REPO, env=env, capture_output=True, text=True,
                     timeout=900)
  assert p.returncode == 0, p.stderr[-2000:]
  evals = loop.metric(loop.read_metrics(tmp_path / "run"), "test/accuracy")
  assert evals[-1][0] == 100 and evals[-1][1] >= 0.79, evals


EXACT_AS_PUBLISHED = ["--loss", "exact", "--exact-sigma", "scheduled", "--exact-margin", "0.5", "--logit-batchnorm",
                      "--grad-normalizer", "--optimizer", "sgd", "--lr", "0.5", "--schedule", "exponential",
                      "--weight-decay", "1e-4", "--batch-size", "256"]


@pytest.mark.realdata
def test_exact_as_published_does_not_collapse_on_mnist(tmp_path):
  """EXACT with the authors' recipe (scheduled sigma 10 -> 1, margin 0.5, logit batch-norm, gradient normalizer,
  SGD 0.5 decayed): 20 steps of the small CNN on real MNIST, as a child at XLA level 1 (RUN_XLA_FLAGS). Measured
  (2-core AMD EPYC VM, level 1): 83.21% at step 20 of a 20-step run (2026-12-05), 88.28% at step 40 of a 40-step
  run, 93.26% at step 100 of a 100-step run (2026-12-04), where the learned-sigma head with the same SGD recipe sat
  at 12.28% (collapsed, 2026-12-01); the bar, 75%, is far above chance and below the measured run."""
  require_real_data("mnist")
  argv = ["--dataset", "mnist", *EXACT_AS_PUBLISHED, "--steps", "20", "--workdir", str(tmp_path / "run"),
          "--no-progress", "--no-tensorboard"]
  p = subprocess.run([sys.executable, "-m", "train.classify", *argv], cwd=REPO, env=child_env(XLA_FLAGS=RUN_XLA_FLAGS),
                     capture_output=True, text=True, timeout=900)
  assert p.returncode == 0, p.stderr[-2000:]
  (step, accuracy), = loop.metric(loop.read_metrics(tmp_path / "run"), "test/accuracy")
  assert step == 20 and accuracy >= 0.75, accuracy


def test_exact_scheduled_sigma_model_has_ten_outputs_and_trains():
  config = classify.Config(loss="exact", exact_sigma="scheduled", exact_margin=0.5, logit_batchnorm=True,
                           grad_normalizer=True, optimizer="sgd", lr=0.5, schedule="exponential", weight_decay=1e-4)
  assert classify.num_outputs(config) == 10
  _check_training(config, jax.random.uniform(jax.random.PRNGKey(0), (8, 28, 28, 1)))


def test_exponential_schedule_ends_at_lr_final():
  config = classify.Config(lr=0.5, schedule="exponential", lr_final=1e-4)
  lr = classify.learning_rate(config, 1000)
  np.testing.assert_allclose([float(lr(0)), float(lr(500)), float(lr(1000)), float(lr(5000))],
                             [0.5, np.sqrt(0.5 * 1e-4), 1e-4, 1e-4], rtol=1e-4)


def test_recipe_sets_defaults_that_flags_beside_it_override():
  config = cli.parse(classify.Config, ["--recipe", "cpu94", "--lr", "0.05"], recipes=classify.RECIPES)
  assert config.lr == 0.05                                         # the flag wins
  assert (config.model, config.stem_stride, config.augment) == ("mobilenet", 1, "flip")
  assert cli.parse(classify.Config, ["--recipe", "seed"], recipes=classify.RECIPES).input_size == 56
  assert cli.parse(classify.Config, [], recipes=classify.RECIPES).model == "cnn"   # no recipe: the plain defaults
  with pytest.raises(cli.ConfigError, match="invalid choice"):
    cli.parse(classify.Config, ["--recipe", "nope"], recipes=classify.RECIPES)


@pytest.mark.parametrize("augment,model,channels", [("crop_flip_erase", "mobilenet", 3), ("rotate_shift", "cnn", 1)])
def test_augmented_preprocess_keeps_shapes_and_the_eval_path_untouched(augment, model, channels):
  config = classify.Config(augment=augment, model=model, input_size=28)
  batch = {"image": (jnp.arange(8 * 28 * 28, dtype=jnp.int32).reshape(8, 28, 28, 1) % 256).astype(jnp.uint8),
           "label": jnp.zeros(8, jnp.int32)}
  pre = jax.jit(functools.partial(classify.preprocess, config, train=True))
  out = pre(jax.random.PRNGKey(0), batch)["image"]
  chex.assert_shape(out, (8, 28, 28, channels))
  assert not np.allclose(out, pre(jax.random.PRNGKey(1), batch)["image"])       # a function of the key
  test = classify.preprocess(config, jax.random.PRNGKey(0), batch, train=False)["image"]
  np.testing.assert_allclose(test[..., :1], batch["image"] / 255.0, rtol=1e-6)    # no augmentation at test time


def test_flip_only_augmentation_draws_from_the_step_key_itself():
  """--augment flip flips with the transform's key itself, not its split k_flip (the key reuse commented in
  classify.preprocess, kept so that recorded flip runs stay bit-identical); the crop recipes use k_flip."""
  from jaxtricks.data import pipeline
  batch = {"image": (jnp.arange(64 * 28 * 28, dtype=jnp.int32).reshape(64, 28, 28, 1) % 251).astype(jnp.uint8),
           "label": jnp.zeros(64, jnp.int32)}
  key, x = jax.random.PRNGKey(3), pipeline.to_float(batch["image"])
  out = classify.preprocess(classify.Config(augment="flip"), key, batch, train=True)["image"]
  np.testing.assert_array_equal(out, pipeline.random_flip(key, x))
  assert not np.array_equal(out, pipeline.random_flip(jax.random.split(key, 3)[0], x))   # k_flip flips others


def test_label_smoothing_changes_only_the_targets():
  import optax
  logits = jax.random.normal(jax.random.PRNGKey(0), (4, 10))
  batch = {"label": jnp.array([0, 3, 9, 1])}
  smoothed = classify.objective(classify.Config(label_smoothing=0.1), None, logits, batch, 0)
  targets = 0.9 * jax.nn.one_hot(batch["label"], 10) + 0.01
  np.testing.assert_allclose(smoothed, optax.softmax_cross_entropy(logits, targets).mean(), rtol=1e-6)
  plain = classify.objective(classify.Config(), None, logits, batch, 0)
  np.testing.assert_allclose(plain, optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean(),
                             rtol=1e-6)


class _Linear(flax.linen.Module):
  """A Dense layer on the flattened image: a model whose outputs are written out by hand in a test."""
  outputs: int

  @flax.linen.compact
  def __call__(self, x):
    return flax.linen.Dense(self.outputs)(x.reshape(x.shape[0], -1))


def test_flip_averaged_log_probs_is_the_log_of_the_mean_softmax_over_an_image_and_its_mirror():
  """Known answer from a model written out by hand (a Dense layer on the flattened image), and a mirror-symmetric
  image gets its plain log-softmax."""
  import optax
  model = _Linear(3)
  state = classifier.init(jax.random.PRNGKey(0), model, (1, 2, 4, 1), optax.sgd(0.1))
  x = jax.random.uniform(jax.random.PRNGKey(1), (5, 2, 4, 1))
  got = classifier.flip_averaged_log_probs(model, state, x)
  chex.assert_shape(got, (5, 3))
  w, b = state.params["Dense_0"]["kernel"], state.params["Dense_0"]["bias"]
  p = lambda images: jax.nn.softmax(images.reshape(5, -1) @ w + b[None])
  np.testing.assert_allclose(got, jnp.log(0.5 * (p(x) + p(x[:, :, ::-1, :]))), rtol=1e-5, atol=1e-6)
  symmetric = x + x[:, :, ::-1, :]
  np.testing.assert_allclose(classifier.flip_averaged_log_probs(model, state, symmetric),
                             jax.nn.log_softmax(model.apply({"params": state.params}, symmetric)), rtol=1e-5,
                             atol=1e-6)


def test_eval_flips_adds_the_flip_averaged_metrics_and_refuses_exact(capsys):
  config = classify.Config(model="cnn", eval_flips=True)   # cnn: no resize; the model itself is a tiny stand-in
  model = _Linear(10)
  state = classifier.init(jax.random.PRNGKey(0), model, (1, 28, 28, 1), classify.optimizer(config, 10))
  batch = {"image": jax.random.randint(jax.random.PRNGKey(1), (6, 28, 28, 1), 0, 256).astype(jnp.uint8),
           "label": jnp.arange(6) % 10}
  out = classify.per_example(config, model, state, batch)
  assert set(out) == {"accuracy", "nll", "accuracy_flips", "nll_flips"}
  x = batch["image"] / 255.0
  log_p = classifier.flip_averaged_log_probs(model, state, x)
  np.testing.assert_allclose(out["nll_flips"], -log_p[jnp.arange(6), batch["label"]], rtol=1e-5)
  assert not np.allclose(out["nll_flips"], out["nll"])                      # the mirror counts
  assert set(classify.per_example(classify.Config(model="cnn"), model, state, batch)) == {"accuracy", "nll"}
  with pytest.raises(cli.ConfigError, match="eval_flips|eval-flips"):
    classify.Config(loss="exact", eval_flips=True)


def test_eval_only_reproduces_the_last_evaluation_refuses_another_model_and_creates_nothing(raw, capsys, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", str(raw / "tfds"))
  base = ["--data-dir", str(raw / "raw"), "--batch-size", "16", "--no-progress", "--no-tensorboard"]
  run = ["--steps", "12", "--eval-every", "12", "--workdir", str(raw / "run"), *base]
  assert classify.main(run) == 0
  logged = loop.metric(loop.read_metrics(raw / "run"), "test/accuracy")
  before = sorted(p.name for p in (raw / "run" / "checkpoints").iterdir())
  assert classify.main([*run, "--eval-only"]) == 0
  got = json.loads((raw / "run" / "eval.json").read_text())
  assert got["step"] == 12 and got["test/accuracy"] == pytest.approx(logged[-1][1], abs=1e-6)
  assert sorted(p.name for p in (raw / "run" / "checkpoints").iterdir()) == before    # nothing trained
  capsys.readouterr()
  assert classify.main([*run, "--eval-only", "--model", "mobilenet"]) == cli.EXIT_USAGE
  assert "holds a run of another configuration" in capsys.readouterr().err
  assert classify.main(["--eval-only", "--workdir", str(raw / "untrained"), *base]) == cli.EXIT_USAGE
  assert not (raw / "untrained").exists()
