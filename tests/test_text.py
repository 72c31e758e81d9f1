"""Text data (tokenizer, vocabulary, padding, both raw-source paths), the IMDB models, and train.sentiment."""

import functools
import gzip
import io
import json
import tarfile
import zipfile

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import require_real_data

from jaxtricks import classifier, cli
from jaxtricks.data import text
from jaxtricks.models.text import CNNClassifier, KerasLSTM, LSTMClassifier, hard_sigmoid
from train import sentiment


def test_tokenize_lowercases_removes_br_and_splits_punctuation():
  assert text.tokenize("Great movie!<br /><br />I didn't LIKE the end, though.") == [
      "great", "movie", "!", "i", "didn't", "like", "the", "end", ",", "though", "."]


def test_vocabulary_ranks_by_training_frequency_with_reserved_ids():
  train = [["b", "a", "b"], ["c", "b", "a"], ["d"]]
  vocab = text.build_vocabulary(train, num_words=6)
  assert vocab == {"b": 3, "a": 4, "c": 5}          # 3 most frequent; "c" beats "d" on the tie by the word
  assert text.encode(["a", "zebra", "d", "b"], vocab) == [1, 4, 2, 2, 3]   # start, OOV for unknown and capped
  with pytest.raises(ValueError, match="num_words must exceed 3"):
    text.build_vocabulary(train, num_words=3)


def test_pad_sequences_pre_padding_and_pre_truncation():
  x = text.pad_sequences([[1, 5, 6], [1, 2, 3, 4, 5, 6, 7], []], maxlen=5)
  np.testing.assert_array_equal(x, [[0, 0, 1, 5, 6], [3, 4, 5, 6, 7], [0, 0, 0, 0, 0]])
  assert x.dtype == np.int32


def _fake_imdb(root):
  """The same 3+2 train reviews as the JSON-lines copy and as the official aclImdb archive."""
  reviews = [(0, 0, 3, "Bad.<br />Very bad"), (1, 0, 1, "awful"), (2, 0, 2, "no!"), (3, 1, 9, "Good"),
             (4, 1, 10, "great, great")]
  (root / "imdb").mkdir(parents=True)
  for split in ("train", "test"):
    with gzip.open(root / "imdb" / f"imdb_{split}.jsonl.gz", "wt") as f:
      for i, label, rating, t in reversed(reviews):        # file order differs from id order on purpose
        f.write(json.dumps({"id": i, "rating": rating, "label": label, "text": t}) + "\n")
  archive = root / "aclImdb_v1.tar.gz"
  with tarfile.open(archive, "w:gz") as tar:
    for split in ("train", "test"):
      for i, label, rating, t in reviews:
        n = i if label == 0 else i - 3
        data = t.encode()
        info = tarfile.TarInfo(f"aclImdb/{split}/{'pos' if label else 'neg'}/{n}_{rating}.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
  return reviews, archive


def test_imdb_local_files_and_official_archive_give_the_same_examples(tmp_path):
  reviews, archive = _fake_imdb(tmp_path / "raw")
  b = text.ImdbReviews.__new__(text.ImdbReviews)      # the parsing methods only; no TFDS preparation
  local = list(b._examples({"train": tmp_path / "raw" / "imdb" / "imdb_train.jsonl.gz"}, "train"))
  official = list(b._examples({"archive": archive}, "train"))
  assert local == official == [(t, label) for _, label, _, t in reviews]


def test_imdb_builder_end_to_end_on_fake_files(tmp_path, monkeypatch):
  _fake_imdb(tmp_path / "raw")
  monkeypatch.setenv("JAXTRICKS_OFFLINE", "1")
  data = text.load_sequences("imdb", num_words=8, maxlen=4, data_dir=str(tmp_path / "raw"),
                             tfds_dir=str(tmp_path / "tfds"))
  x, y = data["train"]
  np.testing.assert_array_equal(y, [0, 0, 0, 1, 1])
  chex.assert_shape(x, (5, 4))
  # vocabulary (train): bad 3, great 4, then the count-1 tokens by spelling: ! 5, "," 6, . 7; all else OOV 2
  np.testing.assert_array_equal(x, [[3, 7, 2, 3], [0, 0, 1, 2], [0, 1, 2, 5], [0, 0, 1, 2], [1, 4, 6, 4]])
  # from the cache: nothing is tokenized again
  monkeypatch.setattr(text, "tokenize", lambda t: (_ for _ in ()).throw(AssertionError("tokenized again")))
  again = text.load_sequences("imdb", num_words=8, maxlen=4, data_dir=str(tmp_path / "raw"),
                              tfds_dir=str(tmp_path / "tfds"))
  np.testing.assert_array_equal(again["train"][0], x)
  # a named folder that does not exist is an error, warm cache or not
  with pytest.raises(text.DataError, match="/nonexistent: no such folder"):
    text.load_sequences("imdb", num_words=8, maxlen=4, data_dir="/nonexistent", tfds_dir=str(tmp_path / "tfds"))


def test_sst2_tsv_and_glue_zip_parse_alike(tmp_path):
  rows = "sentence\tlabel\nit 's good .\t1\nbad .\t0\n"
  local = list(text._tsv_examples(rows.splitlines(), "x"))
  zpath = tmp_path / "SST-2.zip"
  with zipfile.ZipFile(zpath, "w") as z:
    z.writestr("SST-2/dev.tsv", rows)
    z.writestr("SST-2/test.tsv", "index\tsentence\n0\tfine .\n")
  b = text.Sst2.__new__(text.Sst2)
  assert list(b._examples({"archive": zpath}, "validation")) == local == [("it 's good .", 1), ("bad .", 0)]
  assert list(b._examples({"archive": zpath}, "test")) == [("fine .", -1)]   # GLUE's test has no labels
  assert list(text._tsv_examples(["label\tcontent", "1\tok"], "y")) == [("ok", 1)]


def _numpy_lstm(x, w, u, b, gate):
  """Reference Keras LSTM forward in float64."""
  h = np.zeros((x.shape[0], u.shape[0]))
  c = np.zeros_like(h)
  act = (lambda v: np.clip(0.2 * v + 0.5, 0, 1)) if gate == "hard_sigmoid" else (lambda v: 1 / (1 + np.exp(-v)))
  for t in range(x.shape[1]):
    z = x[:, t] @ w + h @ u + b
    i, f, g, o = np.split(z, 4, axis=-1)
    c = act(f) * c + act(i) * np.tanh(g)
    h = act(o) * np.tanh(c)
  return h


@pytest.mark.parametrize("gate", ["hard_sigmoid", "sigmoid"])
def test_lstm_matches_a_numpy_reference(gate):
  layer = KerasLSTM(6, gate=gate)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 7, 5))
  variables = layer.init(jax.random.PRNGKey(1), x)
  p = {k: np.asarray(v, np.float64) for k, v in variables["params"].items()}
  np.testing.assert_allclose(p["bias"][6:12], 1.0)          # unit forget bias
  got = layer.apply(variables, x)
  want = _numpy_lstm(np.asarray(x, np.float64), p["kernel"], p["recurrent_kernel"], p["bias"], gate)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  assert float(hard_sigmoid(jnp.array(10.0))) == 1.0 and float(hard_sigmoid(jnp.array(0.0))) == 0.5


def test_lstm_dropout_masks_are_fixed_across_time():
  """With input dropout only, a dropped input feature is dropped at every step: the output equals the
  no-dropout output on inputs with those features zeroed (and rescaled) for the whole sequence."""
  layer = KerasLSTM(4, dropout=0.5)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 8))
  variables = layer.init(jax.random.PRNGKey(1), x)
  key = jax.random.PRNGKey(5)
  out = layer.apply(variables, x, train=True, rngs={"dropout": key})
  # every per-sequence mask of the first example's 8 features, as one batch of 256 sequences (one call, no dropout)
  masks = np.array([[(bits >> j) & 1 for j in range(8)] for bits in range(256)], np.float32).reshape(256, 1, 8)
  plain = layer.apply(variables, np.broadcast_to(x[:1], (256, 6, 8)) * masks * 2.0)
  matches = [np.allclose(plain[i:i + 1], out[:1], atol=1e-5) for i in range(256)]
  assert sum(matches) == 1


def test_models_output_one_logit_per_example():
  ids = jnp.array([[0, 0, 1, 5, 9, 2], [1, 3, 4, 4, 7, 8]])
  for model in (LSTMClassifier(vocab_size=10, embed_dim=4, hidden=3), CNNClassifier(vocab_size=10, embed_dim=4,
                                                                                    filters=5, hidden=3)):
    variables = model.init(jax.random.PRNGKey(0), ids)
    out = model.apply(variables, ids, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    chex.assert_shape(out, (2,))
    chex.assert_tree_all_finite(out)


@pytest.mark.parametrize("model, loss", [("lstm", "bce"), ("cnn", "margin")])
def test_training_steps_lower_the_loss_on_a_tiny_batch(model, loss):
  config = sentiment.Config(model=model, loss=loss, num_words=50, maxlen=12)
  ids = jax.random.randint(jax.random.PRNGKey(0), (16, 12), 0, 50)
  labels = (ids[:, -1] > 25).astype(jnp.int32)                  # learnable from the last word
  model, tx = sentiment.make_model(config), optax.adam(config.lr)
  state = classifier.init(jax.random.PRNGKey(1), model, (1, 12), tx, x_dtype=jnp.int32)
  step = jax.jit(functools.partial(sentiment.train_step, config=config, model=model, tx=tx))
  first = None
  for i in range(30):
    state, m = step(state, {"ids": ids, "label": labels}, jax.random.PRNGKey(i))
    first = float(m["loss"]) if first is None else first
  assert float(m["loss"]) < 0.7 * first, (first, float(m["loss"]))


@pytest.mark.parametrize("args, words", [
    (["--loss", "margin", "--margin", "0.4"], "--margin must be in (0.5, 1)"),
    (["--model", "gru"], "invalid choice: 'gru'"),
    (["--dataset", "yelp"], "invalid choice: 'yelp'"),
    (["--epochs", "-1"], "--epochs must be >= 0"),
    (["--num-words", "2"], "--num-words must be > 3"),
    (["--dataset", "imdb", "--data-dir", "/nonexistent"], "--data-dir /nonexistent: no such folder"),
])
def test_bad_input_one_line_exit_2(args, words, tmp_path, capsys, monkeypatch):
  monkeypatch.delenv("JAXTRICKS_DATA", raising=False)
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  rc = cli.main(sentiment.Config, sentiment.run, argv=args + ["--workdir", str(tmp_path / "w")], prog="s")
  err = capsys.readouterr().err
  assert rc == cli.EXIT_USAGE and len(err.strip().splitlines()) == 1 and words in err, err


@pytest.mark.realdata
def test_real_imdb_and_sst2_counts():
  require_real_data("imdb")
  for split in ("train", "test"):
    _, labels = text.load_text("imdb", split)
    assert len(labels) == 25000 and int((labels == 1).sum()) == 12500
  counts = {s: len(text.load_text("sst2", s)[1]) for s in ("train", "validation", "test")}
  assert counts == {"train": 67349, "validation": 872, "test": 1821}
