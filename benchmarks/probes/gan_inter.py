# One-off probe of 2026-12-02 (issue 18), kept because benchmarks/RESULTS.md quotes its numbers (AMD EPYC Zen 5 host,
# background paused). Run: python benchmarks/probes/gan_inter.py
import time, sys, jax, optax, numpy as np
from jaxtricks import gan
from jaxtricks.models.dcgan import Generator, Discriminator
B=64; g, d = Generator(width=64), Discriminator(width=64)
key = jax.random.PRNGKey(0)
x = jax.random.uniform(key, (B, 28, 28, 1), minval=-1, maxval=1); z = jax.random.normal(key, (B, 100))
tx = gan.two_timescale(optax.adam(2e-4), optax.adam(2e-4))
s0 = gan.init(key, g, d, (1, 100), (1, 28, 28, 1), tx)
f = lambda s, x, z: gan.single_step(s, x, z, mode="single", generator=g, discriminator=d, tx=tx)
opts = {"default": None, "no ynn conv": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
        "no ynn": {"xla_cpu_experimental_ynn_fusion_type": ""}}
steps = {k: jax.jit(f, compiler_options=o) if o else jax.jit(f) for k, o in opts.items()}
states = {k: jax.tree.map(lambda a: a.copy(), s0) for k in opts}
outs = {k: steps[k](states[k], x, z)[1] for k in opts}
print({k: float(v["d_loss"]) for k, v in outs.items()})
ts = {k: [] for k in opts}
for _ in range(12):
  for k in opts:
    t=time.perf_counter(); states[k], m = steps[k](states[k], x, z); jax.block_until_ready(states[k]); ts[k].append(time.perf_counter()-t)
for k in opts: print(f"{k:12s} {np.median(ts[k][2:])*1e3:7.1f} ms")
