# One-off probe of 2026-12-02 (issue 18), kept because benchmarks/RESULTS.md quotes its numbers (AMD EPYC Zen 5 host,
# background paused). Run: python benchmarks/probes/probe_bf16.py
import time, torch
torch.set_num_threads(2)
def bench(f, n=5):
    f(); ts=[]
    for _ in range(n):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    ts.sort(); return ts[len(ts)//2]
N=2048
for dt in (torch.float32, torch.bfloat16):
    a=torch.randn(N,N,dtype=dt); b=torch.randn(N,N,dtype=dt)
    t=bench(lambda: a@b); print("matmul", dt, f"{2*N**3/t/1e9:.0f} GFLOP/s")
x=torch.randn(64,64,32,32); w=torch.randn(64,64,3,3)
for dt in (torch.float32, torch.bfloat16):
    xx=x.to(dt); ww=w.to(dt)
    t=bench(lambda: torch.nn.functional.conv2d(xx,ww,padding=1))
    print("conv3x3", dt, f"{2*64*64*64*9*32*32/t/1e9:.0f} GFLOP/s")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=(dt==torch.bfloat16)):
        t=bench(lambda: torch.nn.functional.conv2d(x,w,padding=1))
    print("conv3x3 autocast" if dt==torch.bfloat16 else "conv3x3 f32 again", f"{2*64*64*64*9*32*32/t/1e9:.0f} GFLOP/s")
