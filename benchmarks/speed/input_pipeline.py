"""Cost of the on-device input pipeline relative to a classifier step.

    python -m benchmarks.speed.input_pipeline [--data synthetic|fashion_mnist]

For each model: the first step's time (compile included), the median time of the input pipeline alone
(gather from the on-device split + uint8->float + flips, + resize 28->56 and grey->RGB for MobileNet), of
the train step alone on a fixed batch, and of both as the loop runs them; the pipeline's share is
(both - step) / both. Synthetic data by default has the real shapes (60,000 x 28 x 28 x 1 uint8).
"""

import functools
import sys

import jax
import numpy as np

from benchmarks.common import ArgumentParser, classifier_step, machine, table, time_call, time_interleaved
from jaxtricks.data import load, pipeline
from jaxtricks.models.cnn import CNN
from jaxtricks.models.mobilenet import MobileNetV1

MODELS = {   # (model, the input side it sees: train.classify resizes MobileNet's 28x28 to 56x56x3)
    "cnn": (CNN(), None),
    "mobilenet-0.25": (MobileNetV1(width=0.25), 56),
    "mobilenet-1.0": (MobileNetV1(width=1.0), 56),
}


def preprocess(size, key, batch):
  """train.classify's training transform: uint8 -> [0, 1], flips, and for MobileNet resize + grey -> RGB."""
  x = pipeline.random_flip(key, pipeline.to_float(batch["image"]))
  return {"image": x if size is None else pipeline.resize_rgb(x, size), "label": batch["label"]}


def measure(name: str, images, labels, *, batch_size: int, repeats: int) -> list:
  model, size = MODELS[name]
  key = jax.random.PRNGKey(0)
  batches = pipeline.DeviceBatches({"image": images, "label": labels}, batch_size=batch_size, key=key,
                                   transform=functools.partial(preprocess, size))
  state, step_fn = classifier_step(model, (28, 28, 1) if size is None else (size, size, 3))
  fixed = batches(0)
  holder = {"state": state, "step": 0}

  def step_only():
    holder["state"], m = step_fn(holder["state"], fixed, key)
    return m

  def pipe_only():
    holder["step"] += 1
    return batches(holder["step"])

  def both():
    holder["step"] += 1
    holder["state"], m = step_fn(holder["state"], batches(holder["step"]), key)
    return m

  first, _ = time_call(step_only, repeats=0, warmup=0)
  t = time_interleaved({"step": step_only, "pipe": pipe_only, "both": both}, repeats=repeats)
  t_step, t_pipe, t_both = t["step"], t["pipe"], t["both"]
  share = max(t_both - t_step, 0.0) / t_both
  return [name, batch_size, first, t_pipe * 1e3, t_step * 1e3, t_both * 1e3, f"{100 * share:.1f}%",
          f"{100 * t_pipe / t_both:.1f}%", 1 / t_both]


def main(argv=None):
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data", choices=["synthetic", "fashion_mnist"], default="synthetic")
  p.add_argument("--models", default="cnn,mobilenet-0.25,mobilenet-1.0")
  p.add_argument("--batch-size", type=int, default=64)
  p.add_argument("--repeats", type=int, default=20)
  args = p.parse_args(argv)
  names = p.comma_list("--models", args.models, of=str, choices=list(MODELS))
  if args.data == "synthetic":
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60000, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, (60000,)).astype(np.int32)
  else:
    images, labels = load("fashion_mnist", "train")
  rows = []
  for name in names:
    repeats = args.repeats if name != "mobilenet-1.0" or jax.devices()[0].platform != "cpu" else min(args.repeats, 5)
    rows.append(measure(name, images, labels, batch_size=args.batch_size, repeats=repeats))
  print(f"input pipeline vs train step — {machine()}, jax {jax.__version__}, batch {args.batch_size}, "
        f"flips on, median of repeats after warm-up")
  print(table(["model", "batch", "first step s (compile)", "pipeline ms", "step ms", "pipeline+step ms",
               "pipeline share (both-step)/both", "pipeline alone / both", "steps/s"], rows))


if __name__ == "__main__":
  sys.exit(main())
