"""Time per call of each loss and of its gradient, jitted, for batch 1024 and C = 10, 1000.

    python -m benchmarks.speed.losses [--batch 1024] [--classes 10,1000] [--num-points 32]

EXACT's cost is the Gauss-Hermite quadrature: B x K x C log-normal-CDF evaluations (K = --num-points) against
softmax cross-entropy's B x C exponentials.
"""

import functools
import sys

import jax
import optax

from benchmarks.common import ArgumentParser, machine, table, time_interleaved
from jaxtricks import losses


def loss_fns(num_points: int):
  ex = lambda f: (lambda mu, sigma, y: f(mu, sigma, y, num_points=num_points).mean())
  return {
      "softmax CE": lambda mu, sigma, y: optax.softmax_cross_entropy_with_integer_labels(mu, y).mean(),
      "margin CE (m=0.6)": lambda mu, sigma, y: losses.margin_softmax_cross_entropy(mu, y, margin=0.6).mean(),
      "soft accuracy": lambda mu, sigma, y: losses.soft_accuracy_loss(mu, y).mean(),
      "EXACT -p": ex(losses.exact_loss),
      "EXACT -log mean p": lambda mu, sigma, y: losses.exact_log_mean_loss(mu, sigma, y, num_points=num_points),
      "EXACT -log p": ex(losses.exact_log_loss),
  }


def main(argv=None):
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=1024)
  p.add_argument("--classes", default="10,1000")
  p.add_argument("--num-points", type=int, default=32)
  p.add_argument("--repeats", type=int, default=20)
  args = p.parse_args(argv)
  rows = []
  for c in p.comma_list("--classes", args.classes):
    key = jax.random.PRNGKey(c)
    mu = jax.random.normal(key, (args.batch, c)) * 3
    sigma = jax.nn.softplus(jax.random.normal(jax.random.fold_in(key, 1), (args.batch,))) + 0.1
    y = jax.random.randint(jax.random.fold_in(key, 2), (args.batch,), 0, c)
    fns = {}
    for name, f in loss_fns(args.num_points).items():
      value = jax.jit(f)
      grad = jax.jit(jax.grad(f, argnums=(0, 1)))
      fns[(name, "value")] = functools.partial(value, mu, sigma, y)
      fns[(name, "grad")] = functools.partial(grad, mu, sigma, y)
    t = time_interleaved(fns, repeats=args.repeats)
    base_v, base_g = t[("softmax CE", "value")], t[("softmax CE", "grad")]
    for name in loss_fns(args.num_points):
      tv, tg = t[(name, "value")], t[(name, "grad")]
      rows.append([c, name, tv * 1e6, tg * 1e6, f"{tv / base_v:.1f}x", f"{tg / base_g:.1f}x"])
  print(f"losses, batch {args.batch}, EXACT with {args.num_points} Gauss-Hermite points — {machine()}, "
        f"jax {jax.__version__}, jitted, median of {args.repeats} after warm-up")
  print(table(["C", "loss", "value µs", "value+grad µs", "value / CE", "grad / CE"], rows))


if __name__ == "__main__":
  sys.exit(main())
