"""Sentiment text data (IMDB, SST-2): TFDS builders over the raw files, and Keras-equivalent integer sequences.

    data = load_sequences("imdb", num_words=20000, maxlen=80)   # {"train": (x, y), "test": (x, y)}
    x, y = data["train"]                                         # int32 [25000, 80], int32 [25000]

Preprocessing, equivalent to Keras' `imdb.load_data(num_words=...)` + `pad_sequences(maxlen=...)` (docs/techniques.md#margin):
lowercase, `<br />` removed, punctuation split off as tokens of its own (`re.findall(r"[\\w']+|[^\\w\\s]")`);
the vocabulary is ranked by frequency on the TRAINING split only (ties by the word); id 0 = padding,
1 = start of the review, 2 = out of vocabulary (and every word ranked past the `num_words` cap), words from 3
(the most frequent word is 3); each review is [1, ids...], then padded and truncated at the front ('pre') to
`maxlen`, as Keras does. Encoded arrays are cached as .npz (no pickle) next to the TFDS cache.

Raw sources, first found wins (sources.py): the data_dir setting / $JAXTRICKS_DATA (one sub-folder per data set)
(imdb/imdb_{train,test}.jsonl.gz; sst2/sst2_{train,dev,test}.tsv), else the official archives (aclImdb_v1.tar.gz
from Stanford; GLUE's SST-2.zip), sha256-checked. Both give the same examples in the same order: IMDB negatives
then positives, each by the number in the file name (aclImdb/<split>/<neg|pos>/<n>_<rating>.txt).
"""

import collections
import contextlib
import gzip
import io
import json
import os
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from jaxtricks.data import builders, sources
from jaxtricks.errors import DataError

PAD, START, OOV, FIRST_WORD = 0, 1, 2, 3
_TOKEN = re.compile(r"[\w']+|[^\w\s]")


def tokenize(text: str) -> list[str]:
  """Lowercase words (letters, digits, apostrophes) and single punctuation marks; `<br />` removed."""
  return _TOKEN.findall(text.replace("<br />", " ").lower())


def build_vocabulary(token_lists, *, num_words: int) -> dict[str, int]:
  """{word: id} of the num_words - 3 most frequent words (ties broken by the word), ids from 3 by rank."""
  if num_words <= FIRST_WORD:
    raise ValueError(f"num_words must exceed {FIRST_WORD} (0 pad, 1 start, 2 OOV), got {num_words}")
  counts = collections.Counter()
  for tokens in token_lists:
    counts.update(tokens)
  ranked = sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[:num_words - FIRST_WORD]
  return {w: FIRST_WORD + r for r, (w, _) in enumerate(ranked)}


def encode(tokens: list[str], vocabulary: dict[str, int]) -> list[int]:
  """[START] + the word ids, OOV for words not in the vocabulary."""
  return [START] + [vocabulary.get(t, OOV) for t in tokens]


def pad_sequences(sequences, *, maxlen: int) -> np.ndarray:
  """Keras' pad_sequences(padding='pre', truncating='pre'): keep the LAST maxlen ids, zeros in front."""
  out = np.zeros((len(sequences), maxlen), np.int32)
  for i, seq in enumerate(sequences):
    tail = seq[-maxlen:]
    if tail:
      out[i, maxlen - len(tail):] = tail
  return out


# ---- TFDS builders over the raw files ----

class _TextBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  VERSION = tfds.core.Version("1.0.0")
  SOURCE: sources.RawSource
  SPLITS: tuple[str, ...]

  def __init__(self, *, raw_data_dir: str | None = None, **kwargs):
    self._raw_data_dir = raw_data_dir
    super().__init__(**kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, description=f"{self.SOURCE.name}, read from the raw files by jaxtricks.",
        features=tfds.features.FeaturesDict({
            "index": tfds.features.Scalar(dtype=np.int64),
            "text": tfds.features.Text(),
            "label": tfds.features.Scalar(dtype=np.int64),   # 0 negative, 1 positive, -1 unknown (GLUE test)
        }))

  def _split_generators(self, dl_manager):
    paths = sources.locate(self.SOURCE, self._raw_data_dir, dl_manager)
    return {split: self._generate_examples(paths, split) for split in self.SPLITS}

  def _generate_examples(self, paths, split):
    for i, (text, label) in enumerate(self._examples(paths, split)):
      yield i, {"index": i, "text": text, "label": label}


class ImdbReviews(_TextBuilder):
  """IMDB Large Movie Review Dataset v1.0 (Maas et al. 2011): 25,000 train / 25,000 test, balanced."""
  name = "jaxtricks_imdb_reviews"
  SPLITS = ("train", "test")
  SOURCE = sources.RawSource(
      name="imdb", files={"train": "imdb_train.jsonl.gz", "test": "imdb_test.jsonl.gz"}, subdirs=("imdb",),
      url="http://ai.stanford.edu/~amaas/data/sentiment/", download_files={"archive": "aclImdb_v1.tar.gz"},
      fix="set JAXTRICKS_DATA=DIR (or {data_dir} DIR) with DIR/imdb/imdb_{train,test}.jsonl.gz, "
          "or go online for the official aclImdb_v1.tar.gz")

  def _examples(self, paths, split):
    if "archive" in paths:
      yield from _imdb_from_archive(paths["archive"], split)
      return
    path = paths[split]
    try:
      with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as e:
      raise DataError(None, f"{path}: not a readable gzipped JSON-lines file ({e}); restore it or remove it") from None
    for row in sorted(rows, key=lambda r: r["id"]):
      yield row["text"], int(row["label"])


def _imdb_from_archive(path, split):
  """aclImdb/<split>/{neg,pos}/<n>_<rating>.txt, negatives then positives, each by n."""
  found = {0: {}, 1: {}}
  with tarfile.open(path, "r:gz") as tar:
    for member in tar:
      parts = member.name.split("/")
      if member.isfile() and len(parts) == 4 and parts[1] == split and parts[2] in ("neg", "pos"):
        n = int(parts[3].split("_")[0])
        found[int(parts[2] == "pos")][n] = tar.extractfile(member).read().decode("utf-8")
  for label in (0, 1):
    for n in sorted(found[label]):
      yield found[label][n], label


class Sst2(_TextBuilder):
  """SST-2 (Socher et al. 2013), the GLUE version: 67,349 train / 872 dev (validation) / 1,821 test."""
  name = "jaxtricks_sst2"
  SPLITS = ("train", "validation", "test")
  SOURCE = sources.RawSource(
      name="sst2", files={"train": "sst2_train.tsv", "validation": "sst2_dev.tsv", "test": "sst2_test.tsv"},
      subdirs=("sst2",), url="https://dl.fbaipublicfiles.com/glue/data/", download_files={"archive": "SST-2.zip"},
      fix="set JAXTRICKS_DATA=DIR (or {data_dir} DIR) with DIR/sst2/sst2_{train,dev,test}.tsv, "
          "or go online for GLUE's SST-2.zip")

  def _examples(self, paths, split):
    if "archive" in paths:
      name = {"train": "train", "validation": "dev", "test": "test"}[split]
      with zipfile.ZipFile(paths["archive"]) as z:
        lines = z.read(f"SST-2/{name}.tsv").decode("utf-8").splitlines()
      where = f"{paths['archive']}:SST-2/{name}.tsv"
    else:
      lines = Path(paths[split]).read_text(encoding="utf-8").splitlines()
      where = str(paths[split])
    yield from _tsv_examples(lines, where)


def _tsv_examples(lines, where):
  """Rows of a TSV whose header names a text column ('sentence' or 'content') and maybe 'label'."""
  header = lines[0].split("\t") if lines else []
  text_col = next((header.index(c) for c in ("sentence", "content") if c in header), None)
  if text_col is None:
    raise DataError(None, f"{where}: header {header} has no 'sentence' or 'content' column")
  label_col = header.index("label") if "label" in header else None
  for row in lines[1:]:
    cells = row.split("\t")
    yield cells[text_col], (int(cells[label_col]) if label_col is not None else -1)


TEXT_BUILDERS = {"imdb": ImdbReviews, "sst2": Sst2}


def load_text(name: str, split: str, *, data_dir: str | None = None,
              tfds_dir: str | None = None) -> tuple[list[str], np.ndarray]:
  """(texts, labels int32) of one split in the official order."""
  if name not in TEXT_BUILDERS:
    raise DataError(None, f"unknown text data set {name!r}; known: {', '.join(TEXT_BUILDERS)}")
  cache = builders.cache_dir(TEXT_BUILDERS[name].SOURCE, data_dir, tfds_dir)
  with builders.cache_damage_named(cache):   # reading a prepared cache; preparing one names its own errors
    b = TEXT_BUILDERS[name](raw_data_dir=data_dir, data_dir=cache, file_format="array_record")
  builders.prepare(b)
  if split not in b.info.splits:
    raise DataError(None, f"{name} has no split {split!r}; it has {', '.join(b.info.splits)}")
  with builders.cache_damage_named(cache):
    source = b.as_data_source(split=split)
    examples = sorted(source.__getitems__(range(len(source))), key=lambda ex: ex["index"])
  texts = [ex["text"].decode("utf-8") if isinstance(ex["text"], bytes) else str(ex["text"]) for ex in examples]
  return texts, np.array([ex["label"] for ex in examples], np.int32)


def load_sequences(name: str, splits=("train", "test"), *, num_words: int, maxlen: int,
                   data_dir: str | None = None, tfds_dir: str | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{split: (ids int32 [N, maxlen], labels int32 [N])}, the vocabulary from the train split; cached."""
  if name not in TEXT_BUILDERS:
    raise DataError(None, f"unknown text data set {name!r}; known: {', '.join(TEXT_BUILDERS)}")
  root = Path(builders.cache_dir(TEXT_BUILDERS[name].SOURCE, data_dir, tfds_dir))   # keyed by the raw files
  cache = root / "jaxtricks_text_cache" / f"{name}-w{num_words}-l{maxlen}-v1.npz"
  try:
    with np.load(cache, allow_pickle=False) as z:
      if all(f"{s}_x" in z for s in splits):
        return {s: (z[f"{s}_x"], z[f"{s}_y"]) for s in splits}
  except (OSError, ValueError, KeyError, zipfile.BadZipFile):   # none kept yet, or damaged: encode anew
    pass
  texts = {s: load_text(name, s, data_dir=data_dir, tfds_dir=tfds_dir) for s in set(splits) | {"train"}}
  tokens = {s: [tokenize(t) for t in texts[s][0]] for s in texts}
  vocabulary = build_vocabulary(tokens["train"], num_words=num_words)
  out = {s: (pad_sequences([encode(t, vocabulary) for t in tokens[s]], maxlen=maxlen), texts[s][1]) for s in texts}
  buf = io.BytesIO()
  np.savez(buf, **{f"{s}_{k}": a for s, (x, y) in out.items() for k, a in (("x", x), ("y", y))})
  tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
  try:   # a folder this process may not write to (a shared, read-only cache) just goes without
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(buf.getvalue())
    tmp.replace(cache)   # atomic: a cache file is whole or absent
  except OSError:
    with contextlib.suppress(OSError):   # on a read-only file system even unlinking a missing file fails
      tmp.unlink(missing_ok=True)
  return {s: out[s] for s in splits}
