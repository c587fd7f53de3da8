"""How the bf16 twin (model/fastpaths/twin.py) changes a GPU forward: kernels launched and
logits, ours with and without the twin against timm's under autocast, same weights; and the
same forwards replayed as CUDA graphs. Usage: PYTHONPATH=src python3 benchmarks/gpu_bf16_check.py [MODEL...]"""

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from crossvit.analysis.benchmark import build_contenders, captured


def kernels_per_forward(forward) -> int:
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        forward()
        torch.cuda.synchronize()
    return sum(e.count for e in prof.key_averages() if e.device_type.name == "CUDA")


def ms_per_forward(forward, steps: int = 50) -> float:
    best = float("inf")
    for _ in range(5):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            forward()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / steps)
    return 1e3 * best


for name in sys.argv[1:] or ["crossvit_9_240", "crossvit_15_240"]:
    ours, theirs = (c.model for c in build_contenders(name, True, None, torch.device("cuda")))
    x = torch.randn(32, 3, 240, 240, device="cuda")

    def run(model, twin=True, x=x):
        def forward():
            if hasattr(model, "bf16_twin_enabled"):  # ours; timm's model has no twin
                model.bf16_twin_enabled = twin
            with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16):
                return model(x)
        return forward

    with torch.inference_mode():
        ref = ours(x).float()
    rows = {"ours, bf16 twin": run(ours), "ours, autocast": run(ours, False), "timm, autocast": run(theirs)}
    print(f"{name}, batch 32, bf16; fp32 logits up to {ref.abs().max().item():.3f}")
    for label, step in rows.items():
        out = step().float()
        err = (out - ref).abs().max().item()
        agree = (out.argmax(1) == ref.argmax(1)).float().mean().item()
        eager = ms_per_forward(step)
        try:
            kernels = kernels_per_forward(step)
        except Exception as e:  # the profiler's event fields differ between versions
            kernels = -1
            print(f"  kernel count failed: {e}")
        try:
            replay = ms_per_forward(captured(step))
        except Exception as e:  # capture can fail; say why and go on
            replay = float("nan")
            print(f"  {label}: CUDA graph capture failed: {str(e).splitlines()[0]}")
        print(f"  {label:16s} max |logit - fp32| {err:.4f}, top-1 agrees {agree:.0%}, {kernels} kernels, "
              f"eager {eager:.2f} ms, CUDA graph {replay:.2f} ms")
