"""Timing CrossViT (ours, and timm's with the same weights) the same way, side by side.

Every contender runs the same step (inference at batch 1 for latency, inference at batch N,
or a full training step) in interleaved rounds, so that drift of the machine's speed hits all
of them alike; we report the best and the median round. Before any timing the contenders'
outputs are compared on the same input.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import CrossViTError
from ..model.checkpoint import StoredCheckpoint, load_checkpoint
from ..model.factory import create_model
from ..model.fastpaths import cpu_support
from ..model.layouts import to_our_layout

MODES = ("latency", "infer", "train")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Setting:
    mode: str  # latency (batch 1), infer (batch N) or train (forward, backward, optimizer step)
    batch_size: int
    precision: str  # fp32, or bf16/fp16 autocast
    compiled: bool = False
    compile_mode: str = "default"  # torch.compile's mode; reduce-overhead replays CUDA graphs
    cuda_graph: bool = False  # inference captured once as a plain CUDA graph and replayed (no compiling)


@dataclass
class Timing:
    seconds: list[float]  # one entry per round: mean seconds per step in that round
    batch_size: int
    peak_memory_mb: float | None = None

    @property
    def best_img_s(self) -> float:
        return self.batch_size / min(self.seconds)

    @property
    def median_img_s(self) -> float:
        return self.batch_size / statistics.median(self.seconds)

    def summary(self) -> dict:
        return {"batch_size": self.batch_size, "best_img_s": self.best_img_s, "median_img_s": self.median_img_s,
                "best_ms": 1e3 * min(self.seconds), "median_ms": 1e3 * statistics.median(self.seconds),
                "rounds_ms": [1e3 * s for s in self.seconds], "peak_memory_mb": self.peak_memory_mb}


@dataclass
class Contender:
    name: str  # "crossvit" or "timm"
    model: nn.Module


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model: nn.Module, setting: Setting, img_size: int, in_chans: int,
              device: torch.device) -> Callable[[], None]:
    """A closure running one step of `setting` on fixed random data."""
    from ..training.engine import autocast  # it loads the dataset modules (timm): only when timing starts

    batch = 1 if setting.mode == "latency" else setting.batch_size
    images = torch.randn(batch, in_chans, img_size, img_size, device=device)
    forward = torch.compile(model, mode=setting.compile_mode) if setting.compiled else model
    if setting.mode != "train":
        def infer() -> None:
            with torch.inference_mode(), autocast(device, setting.precision):
                forward(images)
        return captured(infer) if setting.cuda_graph else infer

    labels = torch.randint(0, max(1, model.num_classes), (batch,), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    scaler = torch.amp.GradScaler(device.type, enabled=setting.precision == "fp16" and device.type == "cuda")

    def train() -> None:
        with autocast(device, setting.precision):
            loss = nn.functional.cross_entropy(forward(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    return train


def captured(step: Callable[[], None]) -> Callable[[], None]:
    """`step` captured once as a CUDA graph; the result replays it, without launching kernels one
    by one from Python. The warm-up before capturing runs on a side stream, as capture requires,
    and builds whatever the step caches (our bf16 twin)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def _read_kib(field_name: str) -> float | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field_name):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def peak_memory_of(step: Callable[[], None], device: torch.device) -> float | None:
    """Peak memory of one step in MiB: CUDA's allocator peak, or on Linux the growth of the
    process's resident-set high-water mark (reset through /proc/self/clear_refs) over the first
    step; memory the allocator kept from earlier steps is not counted, so on CPU it is a floor."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    base = _read_kib("VmRSS:")
    step()
    peak = _read_kib("VmHWM:")
    return None if base is None or peak is None else (peak - base) / 1024


def time_interleaved(steps: dict[str, Callable[[], None]], device: torch.device, rounds: int, min_seconds: float,
                     warmup: int = 3) -> dict[str, list[float]]:
    """Per contender, the mean seconds per step in each round; rounds alternate contenders."""
    iters: dict[str, int] = {}
    for name, step in steps.items():
        for _ in range(warmup):
            step()
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        # Enough steps per round that one round lasts about min_seconds.
        iters[name] = max(1, round(min_seconds / max(time.perf_counter() - start, 1e-6)))
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(rounds):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))
        for name in order:
            synchronize(device)
            start = time.perf_counter()
            for _ in range(iters[name]):
                steps[name]()
            synchronize(device)
            seconds[name].append((time.perf_counter() - start) / iters[name])
    return seconds


def compare_speed(models: dict[str, nn.Module], images: torch.Tensor, rounds: int) -> dict[str, list[float]]:
    """Images per second of each model in each round; one batch per model per round, the models
    taking turns, so that a slow spell of a shared machine hits them alike."""
    def step(model: nn.Module) -> Callable[[], None]:
        def infer() -> None:
            with torch.inference_mode():
                model(images)
        return infer

    seconds = time_interleaved({name: step(m) for name, m in models.items()}, images.device, rounds, min_seconds=0)
    return {name: [len(images) / s for s in per_round] for name, per_round in seconds.items()}


def format_speeds(speeds: dict[str, list[float]]) -> str:
    """img/s (min and median) per model, and the median speed-up of the last model over the first."""
    lines = [f"{name:>7}: {min(v):7.1f} img/s min, {statistics.median(v):7.1f} median over {len(v)} rounds"
             for name, v in speeds.items()]
    first, last = list(speeds.values())[0], list(speeds.values())[-1]
    lines.append(f"speed-up (median): {statistics.median(last) / statistics.median(first):.2f}x")
    return "\n".join(lines)


def matmul_peak_gflops(device: torch.device, precision: str, size: int | None = None, repeats: int = 10) -> float:
    """The machine's matmul throughput in `precision` (best of a few square products; on a GPU
    large enough that one product outlasts the launch and the synchronisation). On the CPU the
    faster of PyTorch's matmul and oneDNN's linear, which our inference path runs: on AMD
    processors the former can run at half of what the cores do (Zen 5, fp32: 223 against 508)."""
    dtype = PRECISIONS[precision]
    support = cpu_support()
    emulated = device.type == "cpu" and dtype != torch.float32 and not support.native_bf16
    size = size or (8192 if device.type == "cuda" else 512 if emulated else 2048)  # emulated: ~1 GFLOP/s
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    products = [lambda: a @ b]
    onednn_dtype = dtype == torch.float32 or (dtype == torch.bfloat16 and support.onednn_bf16)
    if device.type == "cpu" and support.onednn_linear and onednn_dtype:
        packed = torch.ops.mkldnn._reorder_linear_weight(b, size)
        products.append(lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], ""))
    best = float("inf")
    for product in products:
        for _ in range(3):  # let the clocks and the thread pool wake up
            product()
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            product()
            synchronize(device)
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def cpu_name() -> str:
    """The processor's model name (Linux), else what the platform module knows."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def is_out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def build_contenders(name: str, compare_timm: bool, img_size: int | None, device: torch.device) -> list[Contender]:
    """Our model, and timm's with the very same (random) weights when asked."""
    ours = create_model(name, img_size=img_size) if img_size else create_model(name)
    contenders = [Contender("crossvit", ours)]
    if compare_timm:
        try:
            import timm
        except ImportError as e:
            raise CrossViTError("--compare timm needs timm: pip install timm") from e
        if name not in timm.list_models("crossvit_*"):
            raise CrossViTError(f"timm has no model named {name}; --compare timm works for the published variants "
                                f"({', '.join(timm.list_models('crossvit_*'))})")
        kwargs = {"img_size": img_size} if img_size else {}
        reference = timm.create_model(name, pretrained=False, **kwargs)
        stored = StoredCheckpoint(to_our_layout(reference.state_dict()), f"timm:{name}", "timm")
        load_checkpoint(ours, stored)
        contenders.append(Contender("timm", reference))
    for c in contenders:
        c.model.to(device).eval()
    return contenders


def max_output_difference(contenders: list[Contender], img_size: int, in_chans: int, device: torch.device,
                          precision: str = "fp32") -> float:
    """Largest |logit difference| between our model and timm's on one random batch."""
    from ..training.engine import autocast

    if len(contenders) < 2:
        return 0.0
    x = torch.randn(2, in_chans, img_size, img_size, device=device)
    with torch.inference_mode(), autocast(device, precision):
        outs = [c.model.eval()(x).float() for c in contenders]
    return (outs[0] - outs[1]).abs().max().item()
