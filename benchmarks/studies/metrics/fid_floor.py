"""The real-data floor of FID-FMNIST at each sample count the tables use: FID of N real Fashion-MNIST *training*
images against the 10,000 test images, as every FID in this project is taken (the committed feature net,
jaxtricks.metrics), for several random draws of the N images (issue 38).

    python -m benchmarks.studies.metrics.fid_floor        # -> benchmarks/results/fid_floor.json, the table in README.md

FID of N samples is biased upward by about a / N (Chong & Forsyth 2020), so a model's FID at N means little
without the floor at the same N: docs/results.md prints this file's floor under the FID tables, at their sample
count. The floor does not reach 0 as N grows: the feature net was trained on these training images, and all 60,000
of them score 0.62 against the test set (measured 2026-12-04), the net's train/test gap. KID (unbiased: its
expectation does not depend on N; the same units as the tables', the raw MMD^2 of the net's features) is beside it;
its draws share the test set's KID subsets (seed 0), so their spread is not that of independent evaluations.
"""

import sys
from pathlib import Path

import numpy as np

from benchmarks.common import ArgumentParser, table, write_results
from benchmarks.studies.common import update_results_md
from jaxtricks import metrics
from jaxtricks.data import load

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "benchmarks" / "results" / "fid_floor.json"
COUNTS = [500, 1000, 2000, 5000, 10000]   # 500: train.ebm's --fid-samples; 2,000: gan_fid's; 5,000: gan_convergence's
HEADER = ["samples N", "FID floor (mean ± std)", "min .. max", "KID floor (mean ± std)", "draws"]


def floors(train_images, test_images, counts, draws: int, seed: int = 0) -> dict[int, dict]:
  """{N: {"fid": [one per draw], "kid": [...]}}: FID and KID of N training images drawn without replacement
  (a fresh draw each time, from `seed`) against all the test images."""
  net = metrics.load_feature_net()
  train_ND = metrics.feature_net_outputs(train_images, net=net)[0]
  test_ND = metrics.feature_net_outputs(test_images, net=net)[0]
  reference = metrics.gaussian_statistics(test_ND)
  rng = np.random.default_rng(seed)
  out = {}
  for n in counts:
    picks = [rng.choice(len(train_ND), n, replace=False) for _ in range(draws)]
    out[n] = {"fid": [metrics.frechet_distance(*metrics.gaussian_statistics(train_ND[i]), *reference) for i in picks],
              "kid": [metrics.kid(train_ND[i], test_ND)[0] for i in picks]}
  return out


def rows_of(result: dict) -> list[list]:
  def cell(v):
    return f"{np.mean(v):.2f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.2f}"
  return [[int(n), cell(r["fid"]), f"{min(r['fid']):.2f} .. {max(r['fid']):.2f}", cell(r["kid"]), len(r["fid"])]
          for n, r in result.items()]


def main(argv=None) -> int:
  p = ArgumentParser(prog="python -m benchmarks.studies.metrics.fid_floor", description=__doc__.split("\n\n")[0])
  p.add_argument("--counts", default=",".join(map(str, COUNTS)), help="sample counts N, comma-separated")
  p.add_argument("--draws", type=int, default=10, help="random draws of N training images per count")
  p.add_argument("--data-dir", default=None)
  p.add_argument("--out", default="benchmarks/results/fid_floor.json",
                 help="the results file (default: the committed one, rewritten)")
  p.add_argument("--readme", default="benchmarks/studies/metrics/README.md",
                 help="the README whose fid_floor table is rewritten (default: the study's)")
  args = p.parse_args(argv)
  counts = p.comma_list("--counts", args.counts)
  train_images, _ = load("fashion_mnist", "train", data_dir=args.data_dir)
  test_images, _ = load("fashion_mnist", "test", data_dir=args.data_dir)
  if max(counts) > len(train_images) or min(counts) < 2:
    p.error(f"--counts {args.counts}: each count must lie in 2..{len(train_images)} (the training images there)")
  if args.draws < 2:
    p.error(f"--draws {args.draws}: must be >= 2 (a spread needs two draws)")
  result = floors(train_images, test_images, counts, args.draws)
  rows = rows_of(result)
  write_results(args.out, "benchmarks.studies.metrics.fid_floor", argv, HEADER, rows,
                floors={str(n): r for n, r in result.items()})
  print(table(HEADER, rows))
  return update_results_md(args.out, "fid_floor", args.readme)


if __name__ == "__main__":
  sys.exit(main())
