"""XLA flags against the slow lax.scan Langevin chain on CPU: each flag set in its own process.

    python -m benchmarks.speed.langevin_flags [--channels 16 --chains 64 --steps 20]

For each XLA_FLAGS value, a fresh Python process times one jitted chain as a lax.scan and fully unrolled
(median of --repeats after the compiling call) and prints one row; a flag this jaxlib does not know is reported
as such (XLA aborts on unknown flags).
"""

import os
import subprocess
import sys

from benchmarks.common import ArgumentParser, table

FLAGS = ("", "--xla_cpu_use_thunk_runtime=false", "--xla_cpu_use_onednn=true", "--xla_cpu_use_xnnpack=true",
         "--xla_cpu_enable_fast_math=true", "--xla_cpu_multi_thread_eigen=false")

_CHILD = """
import sys
from benchmarks.common import time_call
from benchmarks.speed.langevin import chain_fn, energy_and_variables
import jax
channels, chains, steps, repeats = map(int, sys.argv[1:5])
_, _, energy = energy_and_variables(channels)
x = jax.random.uniform(jax.random.PRNGKey(1), (chains, 28, 28, 1))
key = jax.random.PRNGKey(2)
out = []
for unroll in (1, True):
  f = chain_fn(energy, steps, unroll)
  _, t = time_call(lambda: f(x, key), repeats=repeats, warmup=0)
  out.append(t / steps * 1e3)
print("RESULT", *out)
"""


def main(argv=None):
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--channels", type=int, default=16)
  p.add_argument("--chains", type=int, default=64)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args(argv)
  rows = []
  for flags in FLAGS:
    env = dict(os.environ, XLA_FLAGS=flags)
    r = subprocess.run([sys.executable, "-c", _CHILD, str(args.channels), str(args.chains), str(args.steps),
                        str(args.repeats)], env=env, capture_output=True, text=True, timeout=1800)
    line = next((l for l in r.stdout.splitlines() if l.startswith("RESULT")), None)
    if line is None:
      why = next((l for l in r.stderr.splitlines() if "Unknown flag" in l or "Error" in l), "failed")
      rows.append([flags or "(none)", "-", "-", "-", why.split("] ")[-1][:80]])
    else:
      scan, unrolled = map(float, line.split()[1:])
      rows.append([flags or "(none)", scan, unrolled, f"{scan / unrolled:.1f}x", ""])
    print(rows[-1], flush=True)
  print(f"energy net c={args.channels}, {args.chains} chains, K={args.steps}: ms per Langevin step")
  print(table(["XLA_FLAGS", "lax.scan ms", "unrolled ms", "scan / unrolled", "note"], rows))


if __name__ == "__main__":
  sys.exit(main())
