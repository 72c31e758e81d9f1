"""XLA:CPU's YNNPACK convolutions (jaxlib 0.12's default) against its own kernels, per compiled core, in one process.

    python -m benchmarks.speed.ynn_convolutions [--repeats 8] [--json benchmarks/results/ynn_convolutions.json]

Each core is jitted twice, with XLA's defaults and with `parallel.cpu_compiler_options(ynn_convolutions=False)`
(YNNPACK kept for dots only); both compiles are first checked to compute the same outputs (a step's metrics, a
chain's samples), then timed with calls interleaved (median after warm-up), so that this host's drift hits both
alike. What a program's
`--cpu-ynn-convolutions` default should be follows from its row (benchmarks/speed/README.md).
"""

import sys

import jax
import numpy as np
import optax

from benchmarks.common import ArgumentParser, classifier_step, machine, table, time_interleaved, write_results
from jaxtricks import gan, langevin, parallel


def gan_cores(batch: int, width: int):
  from jaxtricks.models.dcgan import Discriminator, Generator
  g, d = Generator(width=width), Discriminator(width=width)
  key = jax.random.PRNGKey(0)
  x = jax.random.uniform(key, (batch, 28, 28, 1), minval=-1, maxval=1)
  z = jax.random.normal(jax.random.PRNGKey(1), (batch, 100))
  tx = gan.two_timescale(optax.adam(2e-4), optax.adam(2e-4))
  state = gan.init(key, g, d, (1, 100), (1, 28, 28, 1), tx)
  kw = dict(generator=g, discriminator=d, tx=tx)
  return {f"GAN step, single loss (train.gan's default), batch {batch}":
              (lambda s, x, z: gan.single_step(s, x, z, mode="single", **kw), (state, x, z)),
          f"GAN step, alternating, batch {batch}":
              (lambda s, x, z: gan.alternating_step(s, x, z, **kw), (state, x, z))}


def langevin_core(chains: int, steps: int, channels: int):
  from benchmarks.speed.langevin import SAMPLER, energy_and_variables
  _, _, energy = energy_and_variables(channels)
  x = jax.random.uniform(jax.random.PRNGKey(1), (chains, 28, 28, 1))
  chain = lambda x, k: langevin.langevin_chain(energy, x, k, num_steps=steps, unroll=True, **SAMPLER)
  return {f"Langevin chain (train.ebm's sampler, c={channels}), {chains} chains x K={steps}":
              (chain, (x, jax.random.PRNGKey(2)))}


def classifier_cores():
  from jaxtricks.models.cnn import CNN
  from jaxtricks.models.mobilenet import MobileNetV1
  cores = {}
  for name, model, shape, batch in (("small CNN step (train.classify's default), batch 64", CNN(), (28, 28, 1), 64),
                                    ("MobileNet step (--recipe cpu94's net), batch 128",
                                     MobileNetV1(num_classes=10, width=0.5, stem_stride=1), (28, 28, 3), 128)):
    state, step = classifier_step(model, shape, jit=False)
    images = jax.random.uniform(jax.random.PRNGKey(0), (batch, *shape))
    labels = jax.random.randint(jax.random.PRNGKey(1), (batch,), 0, 10)
    cores[name] = (step, (state, {"image": images, "label": labels}, jax.random.PRNGKey(2)))
  return cores


def main(argv=None):
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--repeats", type=int, default=8)
  p.add_argument("--batch", type=int, default=64, help="the GAN's batch")
  p.add_argument("--width", type=int, default=64, help="the GAN's width")
  p.add_argument("--chains", type=int, default=128)
  p.add_argument("--steps", type=int, default=5, help="Langevin steps per chain call")
  p.add_argument("--channels", type=int, default=64, help="the energy net's stem channels (train.ebm's: 64)")
  p.add_argument("--cores", default="gan,langevin,classifier", help="comma-separated: gan, langevin, classifier")
  p.add_argument("--json", default="", help="where the table goes ('' : nowhere)")
  args = p.parse_args(argv)
  options = parallel.cpu_compiler_options(ynn_convolutions=False)
  if options is None:
    print("this backend or jaxlib has no YNNPACK convolutions to turn off; nothing to compare", file=sys.stderr)
    return 2
  makers = {"gan": lambda: gan_cores(args.batch, args.width),
            "langevin": lambda: langevin_core(args.chains, args.steps, args.channels),
            "classifier": classifier_cores}
  chosen = p.comma_list("--cores", args.cores, of=str, choices=list(makers))
  cores = {name: core for c in chosen for name, core in makers[c]().items()}
  rows = []
  for name, (fn, inputs) in cores.items():
    default, own = jax.jit(fn), jax.jit(fn, compiler_options=options)
    # a step's metrics (its loss values), a chain's samples: Adam's first update is about lr * sign(g), so a
    # parameter whose gradient is ~0 may move either way under float reordering; the metrics do not
    check = lambda out: out[1] if isinstance(out, tuple) else out
    for a, b in zip(jax.tree.leaves(check(default(*inputs))), jax.tree.leaves(check(own(*inputs)))):
      np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=1e-3, atol=1e-4,
                                 err_msg=name)
    t = time_interleaved({"default": lambda: default(*inputs), "own": lambda: own(*inputs)},
                         repeats=args.repeats, warmup=1)
    rows.append([name, t["default"] * 1e3, t["own"] * 1e3, f"{t['default'] / t['own']:.2f}x"])
    print(" ", rows[-1], flush=True)
  header = ["compiled core", "YNNPACK convolutions (XLA's default) ms", "XLA's own convolutions ms",
            "speed-up of XLA's own"]
  print(f"XLA:CPU convolutions: YNNPACK vs XLA's own — {machine()}, jax {jax.__version__}, median of "
        f"{args.repeats}, calls interleaved")
  print(table(header, rows))
  if args.json:
    write_results(args.json, "benchmarks.speed.ynn_convolutions", argv, header, rows)
  return 0


if __name__ == "__main__":
  sys.exit(main())
