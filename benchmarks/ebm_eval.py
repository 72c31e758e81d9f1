"""Evaluate a trained EBM (a workdir of `python -m train.ebm`): FID-FMNIST of its samples and out-of-distribution
detection by energy.

    python -m benchmarks.ebm_eval --workdir runs/ebm-long [--samples 10000] [--json benchmarks/results/ebm_eval.json]

FID-FMNIST (the committed feature net's features, against the 10,000 Fashion-MNIST test images) of --samples
buffer samples (the most recent ones of the training buffer) and of --samples fresh chains from uniform noise
(--fresh-steps Langevin steps, the training sampler's settings otherwise).
OOD: AUROC of the score -U(x) for telling Fashion-MNIST test (in, positive) from MNIST test, uniform noise, and
vertically flipped Fashion-MNIST test (out); next to it the baseline score, the feature net's max softmax
probability (Hendrycks & Gimpel 2017). MNIST comes from $JAXTRICKS_DATA (or --data-dir), like the trainers'.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks.common import machine, table
from jaxtricks import ebm, loop, metrics, replay
from jaxtricks.data import load

# train.ebm's default sampler (its flags --langevin-steps, --step-size, --noise-scale, --grad-clip, --reinit-prob)
SAMPLER = ebm.SamplerConfig(num_steps=20, step_size=20.0, noise_scale=0.005, grad_clip=0.01, reinit_prob=0.05,
                            unroll=ebm.default_unroll())


def load_run(workdir: Path):
  """(settings of a train.ebm workdir (config.json), its energy net, its latest state as plain arrays)."""
  config = json.loads((workdir / "config.json").read_text())
  state, _, _ = loop.restore(workdir)
  return config, ebm.energy_net(config["channels"]), state


def energies(model, state, images, batch_size: int = 1000) -> np.ndarray:
  """U(x) of uint8 or [0, 1] float images [N, 28, 28, 1]."""
  u = jax.jit(ebm.energy_fn(model, state["params"], state["stats"]))
  x = np.asarray(images)
  x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
  return np.concatenate([np.asarray(u(x[i:i + batch_size])) for i in range(0, len(x), batch_size)])


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", default="runs/ebm")
  p.add_argument("--samples", type=int, default=10000)
  p.add_argument("--fresh-steps", type=int, default=60)
  p.add_argument("--data-dir", default=None)
  p.add_argument("--json", default="")
  args = p.parse_args(argv)
  t0 = time.perf_counter()
  config, model, state = load_run(Path(args.workdir))
  buffer = ebm.buffer_from_checkpoint(state)
  net = metrics.load_feature_net()
  fm_test, _ = load("fashion_mnist", "test", data_dir=args.data_dir)
  mnist_test, _ = load("mnist", "test", data_dir=args.data_dir)
  _, real_probs = metrics.feature_net_outputs(fm_test, net=net)
  fid = metrics.fid_against(fm_test, net=net)

  n = min(args.samples, int(buffer.count))
  buffer_x = np.asarray(replay.latest(buffer, n))
  fresh_x = ebm.fresh_samples(model, state["params"], state["stats"], jax.random.PRNGKey(123), fm_test.shape[1:],
                              args.samples, args.fresh_steps, SAMPLER)
  fids = {"buffer": fid(buffer_x), "fresh": fid(fresh_x),
          "train images (reference)": fid(load("fashion_mnist", "train", data_dir=args.data_dir)[0][:args.samples])}

  rng = np.random.default_rng(0)
  outs = {"MNIST test": mnist_test, "uniform noise": rng.integers(0, 256, fm_test.shape, dtype=np.uint8),
          "Fashion-MNIST test, flipped vertically": fm_test[:, ::-1]}
  e_in = energies(model, state, fm_test)
  msp_in = real_probs.max(-1)
  ood = {}
  for name, x in outs.items():
    _, probs = metrics.feature_net_outputs(x, net=net)
    ood[name] = {"ebm": metrics.auroc(-e_in, -energies(model, state, x)),
                 "max_softmax": metrics.auroc(msp_in, probs.max(-1))}
  wall = time.perf_counter() - t0
  print(f"EBM {args.workdir} (channels {config["channels"]}, step {int(state["step"])}) — {machine()}, "
        f"jax {jax.__version__}, {wall / 60:.1f} min")
  print(table(["samples", "n", "FID-FMNIST"],
              [["buffer (most recent)", n, fids["buffer"]], [f"fresh, {args.fresh_steps} steps from noise",
                                                             args.samples, fids["fresh"]],
               ["Fashion-MNIST train images (floor)", args.samples, fids["train images (reference)"]]]))
  print()
  print(table(["out-of-distribution set", "AUROC -energy", "AUROC max softmax (feature net)"],
              [[k, v["ebm"], v["max_softmax"]] for k, v in ood.items()]))
  if args.json:
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"workdir": args.workdir, "step": int(state["step"]), "channels": config["channels"],
                                           "fid": fids, "auroc": ood, "samples": args.samples,
                                           "fresh_steps": args.fresh_steps, "wall_s": wall}, indent=1))


if __name__ == "__main__":
  sys.exit(main())
