"""The DCGAN's convolutions one by one: XLA:CPU's against oneDNN's (jaxtricks.onednn), float32 and bfloat16.

    python -m benchmarks.speed.conv_kernels [--repeats 20] [--json benchmarks/results/conv_kernels.json]

Each of the five convolutions of train.gan's step at batch 64 (the discriminator's two 5x5 stride-2 ones, the
generator's three in the sub-pixel form; models.dcgan), plus the issue-35 probe's 3x3 64x32x32x64: forward,
input-gradient and weight-gradient, each jitted alone, timed with calls interleaved (median after warm-up), and
GFLOP/s of the forward. oneDNN's rows are first checked to equal XLA's (float32). Needs `make onednn`.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import ArgumentParser, machine, table, time_interleaved, write_results
from jaxtricks import onednn

# name: (batch, H, W, C, O, K, stride, padding)
SHAPES = {
    "D 28x28x1 -> 14x14x64, 5x5 /2": (64, 28, 28, 1, 64, 5, 2, "SAME"),
    "D 14x14x64 -> 7x7x128, 5x5 /2": (64, 14, 14, 64, 128, 5, 2, "SAME"),
    "G 7x7x256 -> 7x7x128, 5x5": (64, 7, 7, 256, 128, 5, 1, "SAME"),
    "G sub-pixel 7x7x128 -> 7x7x256, 3x3": (64, 7, 7, 128, 256, 3, 1, "SAME"),
    "G sub-pixel 14x14x64 -> 14x14x4, 3x3": (64, 14, 14, 64, 4, 3, 1, "SAME"),
    "probe 32x32x64 -> 32x32x64, 3x3": (64, 32, 32, 64, 64, 3, 1, "SAME"),
}


def lax_conv(x, w, stride, padding):
  return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def kernels(conv, x, w, stride, padding):
  """{part: call} of one convolution: forward, input-gradient, weight-gradient, each its own jit."""
  y = conv(x, w, stride, padding)
  fwd = jax.jit(lambda x, w: conv(x, w, stride, padding))
  dx = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w, stride, padding), x)[1](g)[0])
  dw = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w, stride, padding), w)[1](g)[0])
  return {"forward": lambda: fwd(x, w), "input-gradient": lambda: dx(x, w, y), "weight-gradient": lambda: dw(x, w, y)}


def main(argv=None) -> int:
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--repeats", type=int, default=20)
  p.add_argument("--json", default="", help="write the table here (e.g. benchmarks/results/conv_kernels.json)")
  args = p.parse_args(argv)
  if not onednn.available():
    p.error(onednn.NOT_BUILT)
  if args.repeats < 1:
    p.error(f"--repeats must be positive, got {args.repeats}")
  rows, totals = [], {}
  for dtype in (jnp.float32, jnp.bfloat16):
    for name, (b, h, w_, c, o, k, stride, padding) in SHAPES.items():
      kx, kw = jax.random.split(jax.random.PRNGKey(0))
      x = jax.random.normal(kx, (b, h, w_, c)).astype(dtype)
      w = (jax.random.normal(kw, (k, k, c, o)) / np.sqrt(k * k * c)).astype(dtype)
      if dtype == jnp.float32:
        np.testing.assert_allclose(onednn.conv2d(x, w, stride, padding), lax_conv(x, w, stride, padding),
                                   rtol=1e-4, atol=1e-4)
      fns = {(impl, part): fn for impl, conv in (("XLA", lax_conv), ("oneDNN", onednn.conv2d))
             for part, fn in kernels(conv, x, w, stride, padding).items()}
      t = time_interleaved(fns, repeats=args.repeats)
      out_hw = -(-h // stride) * -(-w_ // stride)
      gflop = 2 * b * out_hw * c * o * k * k / 1e9
      label = jnp.dtype(dtype).name
      for impl in ("XLA", "oneDNN"):
        ms = [1e3 * t[(impl, part)] for part in ("forward", "input-gradient", "weight-gradient")]
        totals[(label, impl)] = totals.get((label, impl), 0.0) + (sum(ms) if not name.startswith("probe") else 0.0)
        rows.append([label, name, impl, *(f"{v:.3f}" for v in ms), f"{sum(ms):.3f}", f"{gflop / ms[0] * 1e3:.0f}"])
  header = ["dtype", "convolution (batch 64)", "by", "forward ms", "input-grad ms", "weight-grad ms", "total ms",
            "forward GFLOP/s"]
  note = "; ".join(f"the DCGAN's five, {label} by {impl}: {v:.1f} ms" for (label, impl), v in totals.items())
  print(f"Convolutions, XLA:CPU vs oneDNN — {machine()}, jax {jax.__version__}, median of {args.repeats}, interleaved")
  print(table(header, rows))
  print(note)
  if args.json:
    write_results(args.json, "benchmarks.speed.conv_kernels", argv, header, rows, note=note)
  return 0


if __name__ == "__main__":
  sys.exit(main())
