"""The GAN study's models scored beyond FID at one sample count (issue 38): FID of the EMA of G at several sample
counts and its extrapolation FID∞ (Chong & Forsyth 2020), the real-data floor at the same counts (real training
images against the same test set), and KID, precision/recall, density/coverage at 5,000 samples, for the
pretrained seed-0 models of the single loss and of alternating updates (benchmarks/pretrained/).

    python -m benchmarks.studies.gan.gan_rescore     # -> benchmarks/results/gan_rescore.json, the table in README.md

Samples: 10,000 from the EMA of G (z from seed 0's sample key, folded with 2: not the training run's 5,000), the
features of the committed FID-FMNIST net, the 10,000 test images as the reference.
"""

import json
import sys
from pathlib import Path

import jax
import numpy as np

from benchmarks.common import ArgumentParser, table, write_results
from benchmarks.studies.common import update_results_md
from jaxtricks import checkpoints, harness, metrics
from jaxtricks.data import load
from jaxtricks.models.dcgan import Generator

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "benchmarks" / "results" / "gan_rescore.json"
README = Path(__file__).with_name("README.md")
MARKER = "gan_rescore"
PRETRAINED = ROOT / "benchmarks" / "pretrained"
MODELS = ["gan_single_s0", "gan_alternating_s0"]
KNN_SAMPLES = 5000   # KID, precision/recall, density/coverage: of the first 5,000 samples, as the study's FIDs
HEADER = ["model", "FID at {counts} samples", "FID∞", "real-data floor at the same counts", "KID (≤ 5,000 samples)",
          "precision", "recall", "density", "coverage"]


def ema_samples(folder: Path, n: int) -> np.ndarray:
  """n samples in [0, 1] of the EMA of G of a pretrained GAN (its config.json and weights.msgpack)."""
  config = json.loads((folder / "config.json").read_text())
  state, _ = checkpoints.restore_weights(folder)
  generator = Generator(width=config["width"])
  key = jax.random.fold_in(harness.keys(config["seed"], "init", "data", "step", "sample")["sample"], 2)
  z_NZ = jax.random.normal(key, (n, config["z_dim"]))
  x = jax.jit(lambda z: generator.apply({"params": state["ema_g"], "batch_stats": state["batch_stats"]["G"]}, z,
                                        train=False))(z_NZ)
  return np.asarray((x + 1.0) / 2.0)


def rescore(models: list[str], samples: int, counts: list[int], folder: Path = PRETRAINED) -> dict:
  """{"real": the floor, model: its scores} (FIDs at `counts`, FID∞, KID, precision/recall, density/coverage)."""
  test_images, _ = load("fashion_mnist", "test")
  train_images, _ = load("fashion_mnist", "train")
  reference_ND = metrics.feature_net_outputs(test_images)[0]
  reals = train_images[np.random.default_rng(0).permutation(len(train_images))[:samples]]
  real_ND = metrics.feature_net_outputs(reals)[0]
  out = {"real": {"counts": counts, "fid": metrics.fid_at_counts(real_ND, reference_ND, counts),
                  "fid_infinity": metrics.fid_infinity(real_ND, reference_ND, sample_counts=counts)[0]}}
  score = metrics.scores_against(test_images)
  for name in models:
    x = ema_samples(folder / name, samples)
    fake_ND = metrics.feature_net_outputs(x)[0]
    out[name] = {"counts": counts, "fid": metrics.fid_at_counts(fake_ND, reference_ND, counts),
                 "fid_infinity": metrics.fid_infinity(fake_ND, reference_ND, sample_counts=counts)[0],
                 **{k: v for k, v in score(x[:KNN_SAMPLES]).items() if k != "fid"}}
  return out


def rows_of(scores: dict) -> list[list]:
  floor = " / ".join(f"{v:.1f}" for v in scores["real"]["fid"])
  return [[name, " / ".join(f"{v:.1f}" for v in s["fid"]), f"{s['fid_infinity']:.1f}", floor,
           f"{s['kid']:.2f} ± {s['kid_std']:.2f}", *(f"{s[k]:.3f}" for k in ("precision", "recall", "density", "coverage"))]
          for name, s in scores.items() if name != "real"]


def main(argv=None) -> int:
  parser = ArgumentParser(prog="python -m benchmarks.studies.gan.gan_rescore", description=__doc__.split("\n\n")[0])
  parser.add_argument("--models", default=",".join(MODELS), help="pretrained GANs (benchmarks/pretrained/)")
  parser.add_argument("--samples", type=int, default=10000, help="samples drawn from each model's EMA of G")
  parser.add_argument("--counts", default="1000,2000,5000,10000", help="sample counts of the FIDs and of FID∞'s line")
  args = parser.parse_args(argv)
  models = parser.comma_list("--models", args.models, of=str)
  counts = sorted(set(parser.comma_list("--counts", args.counts, what="sample counts")))
  if len(counts) < 2 or counts[0] < 2 or counts[-1] > args.samples:
    parser.error(f"--counts: at least two counts from 2 to --samples ({args.samples}), got {args.counts!r}")
  for m in models:
    folder = PRETRAINED / m
    if not (folder / checkpoints.WEIGHTS).is_file():
      parser.error(f"--models: no pretrained model {m} (benchmarks/pretrained/)")
    config = json.loads((folder / "config.json").read_text())
    if config.get("dataset") != "fashion_mnist" or not config.get("ema_decay"):
      parser.error(f"--models: {m} is not a Fashion-MNIST GAN with an EMA of G (its config.json)")
  scores = rescore(models, args.samples, counts)
  rows = rows_of(scores)
  header = [h.format(counts=" / ".join(f"{c:,}" for c in counts)) for h in HEADER]
  write_results(RESULTS, "benchmarks.studies.gan.gan_rescore", argv if argv is not None else sys.argv[1:], header,
                rows, scores=scores)
  print(table(header, rows))
  return update_results_md(RESULTS, MARKER, README)


if __name__ == "__main__":
  sys.exit(main())
