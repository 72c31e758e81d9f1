"""Evaluate a trained EBM (a workdir of `python -m train.ebm`): FID-FMNIST of its samples and out-of-distribution
detection scores computed from the EBM alone.

    python -m benchmarks.studies.ebm.ebm_eval --workdir runs/ebm-long [--samples 10000] \
        [--json benchmarks/results/ebm_eval.json]

FID-FMNIST (the committed feature net's features, against the 10,000 Fashion-MNIST test images) of --samples
buffer samples (the most recent ones of the training buffer) and of --samples fresh chains from uniform noise
(--fresh-steps Langevin steps, the training sampler's settings otherwise), with KID, precision/recall (k = 3) and
density/coverage (k = 5) from the same features (metrics.scores_against), and the real-data floor: as many
Fashion-MNIST training images scored the same way.
OOD: AUROC of telling Fashion-MNIST test (in, positive) from MNIST test, uniform noise, Fashion-MNIST test flipped
vertically, and CIFAR-10 test in greyscale at 28x28 (out), for each score of jaxtricks.ebm: -U(x), -||dU/dx||,
typicality (reference: 5,000 Fashion-MNIST *train* images), and the complexity-corrected energy (PNG bits), whose
temperature is ebm.standardized_temperature of those same train images — no out-of-distribution set is used to
choose anything. Beside them the PNG length alone (no EBM: what the complexity term contributes by itself).
Next to them the baseline, the feature net's max softmax probability (Hendrycks & Gimpel 2017; the feature net was
trained on Fashion-MNIST labels, which the EBM never sees). MNIST and CIFAR-10 come from $JAXTRICKS_DATA (or
--data-dir), like the trainers'; a set that is not there is left out with a line saying so.
"""

import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks.common import ArgumentParser, machine, table
from benchmarks.studies.common import EBM_SAMPLER as SAMPLER
from benchmarks.studies.common import load_ebm_run as load_run
from jaxtricks import ebm, metrics, replay
from jaxtricks import images as images_lib
from jaxtricks.data import DataError, load


def energies(model, state, images, batch_size: int = 1000) -> np.ndarray:
  """U(x) of uint8 or [0, 1] float images [N, 28, 28, 1]."""
  u = jax.jit(ebm.energy_fn(model, state["params"], state["stats"]))
  x = np.asarray(images)
  x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
  return np.concatenate([np.asarray(u(x[i:i + batch_size])) for i in range(0, len(x), batch_size)])


def greyscale_28(images_NHWC) -> np.ndarray:
  """uint8 RGB images -> uint8 [N, 28, 28, 1] (ITU-R 601 luma, bilinear resize): CIFAR-10 as the EBM's input."""
  from PIL import Image
  x = np.asarray(images_NHWC)
  return np.stack([np.asarray(Image.fromarray(img).convert("L").resize((28, 28), Image.BILINEAR))
                   for img in x])[..., None]


def out_sets(fm_test, data_dir) -> dict[str, np.ndarray]:
  """The out-of-distribution sets, uint8 [N, 28, 28, 1]; those whose raw files are missing are left out."""
  rng = np.random.default_rng(0)
  sets = {}
  for name, make in [("MNIST test", lambda: load("mnist", "test", data_dir=data_dir)[0]),
                     ("CIFAR-10 test, grey 28x28", lambda: greyscale_28(load("cifar10", "test", data_dir=data_dir)[0]))]:
    try:
      sets[name] = make()
    except DataError as e:
      print(f"{name}: left out ({e})")
  sets["uniform noise"] = rng.integers(0, 256, fm_test.shape, dtype=np.uint8)
  sets["Fashion-MNIST test, flipped vertically"] = fm_test[:, ::-1]
  return sets


def scores(model, state, images, e_reference, temperature: float, batch_size: int = 1000) -> dict[str, np.ndarray]:
  """Every candidate score of ebm.py for uint8 images (higher = more in-distribution)."""
  energy = ebm.energy_fn(model, state["params"], state["stats"])
  grad_norm = jax.jit(lambda x: ebm.input_gradient_norm(energy, x))
  x = np.asarray(images, np.float32) / 255.0
  e = energies(model, state, images, batch_size)
  g = np.concatenate([np.asarray(grad_norm(x[i:i + batch_size])) for i in range(0, len(x), batch_size)])
  out = {"-energy": np.asarray(ebm.energy_score(e)), "-grad norm": -g,
         "typicality": np.asarray(ebm.typicality_score(e, e_reference_N=e_reference))}
  bits = images_lib.png_bits(images)
  out["complexity-corrected"] = np.asarray(ebm.complexity_corrected_score(e, bits, temperature=temperature))
  out["_energy"], out["_bits"] = e, bits    # underscored: inputs of the scores, not scores
  return out


def ood_table(model, state, fm_test, real_probs, net, data_dir) -> tuple[dict, float]:
  """{out set: {score: AUROC}} and the complexity-corrected score's temperature (standardized on Fashion-MNIST
  train images: no out-of-distribution data chooses anything)."""
  fm_train = load("fashion_mnist", "train", data_dir=data_dir)[0]
  reference = fm_train[:5000]
  e_reference = energies(model, state, reference)
  temperature = float(ebm.standardized_temperature(e_reference, images_lib.png_bits(reference)))
  s_in = scores(model, state, fm_test, e_reference, temperature)
  ood = {}
  for name, x in out_sets(fm_test, data_dir).items():
    s_out = scores(model, state, x, e_reference, temperature)
    _, probs = metrics.feature_net_outputs(x, net=net)
    ood[name] = {k: metrics.auroc(s_in[k], s_out[k]) for k in s_in if not k.startswith("_")}
    ood[name]["PNG bits alone (no EBM)"] = metrics.auroc(s_in["_bits"], s_out["_bits"])
    ood[name]["max softmax (feature net)"] = metrics.auroc(real_probs.max(-1), probs.max(-1))
  return ood, temperature


def main(argv=None):
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", default="runs/ebm")
  p.add_argument("--samples", type=int, default=10000)
  p.add_argument("--fresh-steps", type=int, default=60)
  p.add_argument("--data-dir", default=None)
  p.add_argument("--json", default="")
  args = p.parse_args(argv)
  t0 = time.perf_counter()
  if not (Path(args.workdir) / "config.json").exists():
    p.error(f"--workdir {args.workdir}: no train.ebm run there (no config.json); train one with "
            f"python -m train.ebm --workdir {args.workdir}")
  config, model, state = load_run(Path(args.workdir))
  buffer = ebm.buffer_from_checkpoint(state)
  net = metrics.load_feature_net()
  fm_test, _ = load("fashion_mnist", "test", data_dir=args.data_dir)
  _, real_probs = metrics.feature_net_outputs(fm_test, net=net)
  score = metrics.scores_against(fm_test, net=net)

  n = min(args.samples, int(buffer.count))
  buffer_x = np.asarray(replay.latest(buffer, n))
  fresh_x = ebm.fresh_samples(model, state["params"], state["stats"], jax.random.PRNGKey(123), fm_test.shape[1:],
                              args.samples, args.fresh_steps, SAMPLER)
  sets = {"buffer": score(buffer_x), "fresh": score(fresh_x),
          "train images (reference)": score(load("fashion_mnist", "train", data_dir=args.data_dir)[0][:args.samples])}
  fids = {k: v["fid"] for k, v in sets.items()}

  ood, temperature = ood_table(model, state, fm_test, real_probs, net, args.data_dir)
  wall = time.perf_counter() - t0
  print(f"EBM {args.workdir} (channels {config['channels']}, step {int(state['step'])}) — {machine()}, "
        f"jax {jax.__version__}, {wall / 60:.1f} min")
  names = {"buffer": "buffer (most recent)", "fresh": f"fresh, {args.fresh_steps} steps from noise",
           "train images (reference)": "Fashion-MNIST train images (floor)"}
  print(table(["samples", "n", "FID-FMNIST", "KID", "precision", "recall", "density", "coverage"],
              [[names[k], v["samples"], v["fid"], f"{v['kid']:.2f} ± {v['kid_std']:.2f}",
                *(v[m] for m in ("precision", "recall", "density", "coverage"))] for k, v in sets.items()]))
  print()
  names = list(next(iter(ood.values())))
  print(f"AUROC, Fashion-MNIST test (in) vs each set (out); complexity-corrected temperature {temperature:g} "
        f"(standardized on Fashion-MNIST train)")
  print(table(["out-of-distribution set", *names], [[k, *v.values()] for k, v in ood.items()]))
  if args.json:
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"workdir": args.workdir, "machine": machine(), "jax": jax.__version__,
                                           "date": time.strftime("%Y-%m-%d"), "step": int(state["step"]),
                                           "channels": config["channels"],
                                           "fid": fids, "scores": sets, "auroc": ood,
                                           "complexity_temperature": temperature, "samples": args.samples,
                                           "fresh_steps": args.fresh_steps, "wall_s": wall}, indent=1))


if __name__ == "__main__":
  sys.exit(main())
