# One-off probe of 2026-12-02 (issue 18), kept because benchmarks/RESULTS.md quotes its numbers (AMD EPYC Zen 5 host,
# background paused). Run: python benchmarks/probes/prof_gan.py
import functools, glob, gzip, json, os, collections, time
import jax, jax.numpy as jnp, optax
from jaxtricks import gan
from jaxtricks.models.dcgan import Generator, Discriminator
B=64
g, d = Generator(width=64), Discriminator(width=64)
key = jax.random.PRNGKey(0)
x = jax.random.uniform(key, (B, 28, 28, 1), minval=-1, maxval=1); z = jax.random.normal(key, (B, 100))
tx = gan.two_timescale(optax.adam(2e-4), optax.adam(2e-4))
s = gan.init(key, g, d, (1, 100), (1, 28, 28, 1), tx)
step = jax.jit(lambda s, x, z: gan.single_step(s, x, z, mode="single", generator=g, discriminator=d, tx=tx), donate_argnums=0)
for _ in range(3): s, m = step(s, x, z)
jax.block_until_ready(s)
t=time.perf_counter()
for _ in range(5): s, m = step(s, x, z)
jax.block_until_ready(s); print("step ms", (time.perf_counter()-t)/5*1e3)
d_ = "/tmp/prof"; os.system(f"rm -rf {d_}")
with jax.profiler.trace(d_, create_perfetto_trace=True):
  for _ in range(5): s, m = step(s, x, z)
  jax.block_until_ready(s)
f = glob.glob(f"{d_}/**/*.trace.json.gz", recursive=True)[0]
ev = json.load(gzip.open(f))
evs = ev["traceEvents"] if isinstance(ev, dict) else ev
tot = collections.Counter(); cnt = collections.Counter()
for e in evs:
  if e.get("ph") == "X" and "dur" in e:
    tot[e["name"]] += e["dur"]; cnt[e["name"]] += 1
for n, t in tot.most_common(45):
  print(f"{t/5/1e3:8.2f} ms  x{cnt[n]//5:3d}  {n[:110]}")
txt = step.lower(s, x, z).compile().as_text()
open("/tmp/gan_hlo.txt","w").write(txt)
