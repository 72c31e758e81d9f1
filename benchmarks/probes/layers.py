# One-off probe of 2026-12-02 (issue 18), kept because benchmarks/RESULTS.md quotes its numbers (AMD EPYC Zen 5 host,
# background paused). Run: python benchmarks/probes/layers.py jax|torch
# per-layer fwd+bwd (input and weight grads): JAX vs PyTorch, DCGAN width 64 batch 64
import sys, time, numpy as np
B=64
# (name, H, Cin, Cout, k, stride) forward convs (D) ; G's subpixel convs are stride-1 3x3 to 4*O
layers=[("D conv1 5x5/2 1->64", 28, 1, 64, 5, 2), ("D conv2 5x5/2 64->128", 14, 64, 128, 5, 2),
        ("G sub0 5x5/1 256->128", 7, 256, 128, 5, 1), ("G sub1 3x3/1 128->4*64", 7, 128, 256, 3, 1),
        ("G sub2 3x3/1 64->4*1", 14, 64, 4, 3, 1)]
def med(f, n=7):
    f(); f(); ts=[]
    for _ in range(n):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    return sorted(ts)[n//2]
if sys.argv[1]=="jax":
    import jax, jax.numpy as jnp
    for name,H,C,O,k,s in layers:
        x=jnp.ones((B,H,H,C)); w=jnp.ones((k,k,C,O))*0.01
        f=lambda x,w: jax.lax.conv_general_dilated(x,w,(s,s),"SAME",dimension_numbers=("NHWC","HWIO","NHWC")).sum()
        g=jax.jit(jax.grad(f,(0,1)))
        t=med(lambda: jax.block_until_ready(g(x,w)))
        Ho=H//s; fl=3*2*B*Ho*Ho*k*k*C*O
        print(f"jax   {name:28s} {t*1e3:7.2f} ms {fl/t/1e9:6.0f} GFLOP/s")
else:
    import torch; torch.set_num_threads(2)
    for name,H,C,O,k,s in layers:
        x=torch.ones(B,C,H,H,requires_grad=True); w=(torch.ones(O,C,k,k)*0.01).requires_grad_()
        def f():
            y=torch.nn.functional.conv2d(x,w,stride=s,padding=k//2)
            gx,gw=torch.autograd.grad(y.sum(),(x,w))
        t=med(f); Ho=H//s; fl=3*2*B*Ho*Ho*k*k*C*O
        print(f"torch {name:28s} {t*1e3:7.2f} ms {fl/t/1e9:6.0f} GFLOP/s")
