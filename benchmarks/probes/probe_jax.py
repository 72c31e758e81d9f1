# One-off probe of 2026-12-02 (issue 18), kept because benchmarks/RESULTS.md quotes its numbers (AMD EPYC Zen 5 host,
# background paused). Run: python benchmarks/probes/probe_jax.py
import time, sys, jax, jax.numpy as jnp
def bench(f, *a, n=5):
    jax.block_until_ready(f(*a)); ts=[]
    for _ in range(n):
        t=time.perf_counter(); jax.block_until_ready(f(*a)); ts.append(time.perf_counter()-t)
    ts.sort(); return ts[len(ts)//2]
N=2048
for dt in (jnp.float32, jnp.bfloat16):
    a=jnp.ones((N,N),dt); b=jnp.ones((N,N),dt)
    t=bench(jax.jit(lambda a,b: a@b), a, b); print("matmul", dt.__name__, f"{2*N**3/t/1e9:.0f} GFLOP/s")
x=jnp.ones((64,32,32,64)); w=jnp.ones((3,3,64,64))
conv=jax.jit(lambda x,w: jax.lax.conv_general_dilated(x,w,(1,1),"SAME",dimension_numbers=("NHWC","HWIO","NHWC")))
for dt in (jnp.float32, jnp.bfloat16):
    t=bench(conv, x.astype(dt), w.astype(dt)); print("conv3x3", dt.__name__, f"{2*64*64*64*9*32*32/t/1e9:.0f} GFLOP/s")
