"""What `crossvit bench` measures and prints: our model (and timm's, with the same weights) timed
in each mode, precision and compilation asked for, with the machine it ran on; as a table or CSV.
The timing itself is in benchmark.py."""

from __future__ import annotations

import csv
import dataclasses
import io
from typing import Callable, Sequence

import torch

from ..errors import CrossViTError
from ..model.fastpaths import cpu_support
from ..model.registry import get_variant
from . import benchmark as bm
from .flops import model_macs


def settings(modes: Sequence[str], precisions: Sequence[str], batch_size: int, compiled: str, compile_mode: str,
             cuda_graph: bool) -> list[bm.Setting]:
    """Every combination asked for, eager before compiled, then by precision, then by mode."""
    compiled_or_not = {"off": [False], "on": [True], "both": [False, True]}[compiled]
    return [bm.Setting(mode, 1 if mode == "latency" else batch_size, precision, c, compile_mode, cuda_graph)
            for c in compiled_or_not for precision in precisions for mode in modes]


def measure(contenders: list[bm.Contender], setting: bm.Setting, img_size: int, in_chans: int,
            device: torch.device, rounds: int, round_seconds: float,
            say: Callable[[str], None]) -> tuple[bm.Setting, dict[str, bm.Timing]]:
    """Time one setting for every contender; on out-of-memory halve the batch and try again."""
    while True:
        try:
            steps = {}
            for c in contenders:
                c.model.train(setting.mode == "train")
                steps[c.name] = bm.make_step(c.model, setting, img_size, in_chans, device)
            memory = {name: bm.peak_memory_of(step, device) for name, step in steps.items()}
            seconds = bm.time_interleaved(steps, device, rounds, round_seconds)
            batch = 1 if setting.mode == "latency" else setting.batch_size
            return setting, {name: bm.Timing(s, batch, memory[name]) for name, s in seconds.items()}
        except Exception as e:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
            if not bm.is_out_of_memory(e) or setting.batch_size == 1 or setting.mode == "latency":
                raise
            smaller = setting.batch_size // 2
            say(f"out of memory at batch {setting.batch_size} ({setting.mode}, {setting.precision}); "
                f"trying batch {smaller}")
            setting = dataclasses.replace(setting, batch_size=smaller)
            if device.type == "cuda":
                torch.cuda.empty_cache()


def bench_report(model: str, modes: Sequence[str] = ("latency", "infer"), precisions: Sequence[str] = ("fp32",),
                 batch_size: int = 32, compiled: str = "off", compile_mode: str = "default", cuda_graph: bool = False,
                 img_size: int | None = None, device: str | None = None, threads: int | None = None, rounds: int = 5,
                 round_seconds: float = 2.0, compare_timm: bool = False, say: Callable[[str], None] = print) -> dict:
    """Time registered variant `model` in every combination of `modes` (latency: batch 1; infer:
    img/s at `batch_size`; train: forward, backward and AdamW step), `precisions` (fp32, bf16,
    fp16) and `compiled` ("off", "on" or "both"), against timm's model with the same weights when
    `compare_timm`. `device`: by default the GPU if there is one. Out of memory, a setting is
    retried at half the batch, and `say` tells so. Returns the report `crossvit bench --json` prints.
    """
    if batch_size < 1:
        raise CrossViTError(f"--batch-size must be at least 1, got {batch_size}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CrossViTError("--device cuda: no CUDA device is available; use --device cpu")
    if cuda_graph:
        if device.type != "cuda":
            raise CrossViTError("--cuda-graph needs a GPU: add --device cuda, or leave --cuda-graph out on the CPU")
        if "train" in modes or compiled != "off":
            raise CrossViTError("--cuda-graph replays eager inference only: use it with --mode latency infer and "
                                "without --compile (compiled CUDA graphs: --compile on --compile-mode reduce-overhead)")
    if threads:
        torch.set_num_threads(threads)
    variant = get_variant(model)
    contenders = bm.build_contenders(model, compare_timm, img_size, device)
    img_size = img_size or variant.config.img_size
    in_chans = variant.config.in_chans
    macs = model_macs(contenders[0].model)
    report = {
        "model": model, "img_size": img_size, "gmacs": macs / 1e9, "device": str(device),
        "machine": torch.cuda.get_device_name(device) if device.type == "cuda" else bm.cpu_name(),
        "cpu_support": ({**dataclasses.asdict(cpu_support()), "text": cpu_support().describe()}
                        if device.type == "cpu" else None),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "max_abs_diff_vs_timm_fp32": bm.max_output_difference(contenders, img_size, in_chans, device)
        if compare_timm else None,
        "matmul_peak_gflops": {p: bm.matmul_peak_gflops(device, p) for p in precisions},
        "results": [],
    }
    for wanted in settings(modes, precisions, batch_size, compiled, compile_mode, cuda_graph):
        setting, timings = measure(contenders, wanted, img_size, in_chans, device, rounds, round_seconds, say)
        flops_per_image = 2 * macs * (3 if setting.mode == "train" else 1)  # backward costs about twice the forward
        row = {"mode": setting.mode, "precision": setting.precision, "compiled": setting.compiled,
               "compile_mode": setting.compile_mode if setting.compiled else None, "cuda_graph": setting.cuda_graph,
               "batch_size": timings["crossvit"].batch_size}
        for name, t in timings.items():
            row[name] = {**t.summary(),
                         "peak_fraction": t.best_img_s * flops_per_image / 1e9 / report["matmul_peak_gflops"][setting.precision]}
        if "timm" in timings:
            ours, theirs = timings["crossvit"], timings["timm"]
            row["speedup_best"] = ours.best_img_s / theirs.best_img_s
            row["speedup_median"] = ours.median_img_s / theirs.median_img_s
        report["results"].append(row)
    return report


COLUMNS = ["mode", "precision", "compiled", "compile_mode", "cuda_graph", "batch_size", "crossvit_img_s", "crossvit_ms", "crossvit_peak_mb",
           "crossvit_peak_fraction", "timm_img_s", "timm_ms", "timm_peak_mb", "speedup_best", "speedup_median"]


def flat_rows(report: dict) -> list[dict]:
    rows = []
    for r in report["results"]:
        flat = {k: r.get(k) for k in ("mode", "precision", "compiled", "compile_mode", "cuda_graph", "batch_size",
                                     "speedup_best", "speedup_median")}
        for name in ("crossvit", "timm"):
            t = r.get(name)
            if t:
                flat |= {f"{name}_img_s": t["best_img_s"], f"{name}_ms": t["best_ms"],
                         f"{name}_peak_mb": t["peak_memory_mb"], f"{name}_peak_fraction": t["peak_fraction"]}
        rows.append(flat)
    return rows


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(report: dict) -> str:
    lines = [f"{report['model']} at {report['img_size']} px, {report['gmacs']:.2f} GMACs/image, {report['device']} "
             f"({report['machine']}, {report['threads']} threads), torch {report['torch']}"]
    if report["max_abs_diff_vs_timm_fp32"] is not None:
        lines.append(f"same weights as timm's: max |logit difference| {report['max_abs_diff_vs_timm_fp32']:.1e} (fp32)")
    if report.get("cpu_support"):
        lines.append(f"CPU: {report['cpu_support']['text']}")
    lines.append("matmul peak: " + ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in report["matmul_peak_gflops"].items()))
    header = ["mode", "prec", "compiled", "batch", "ours img/s (med)", "ours ms", "ours MiB", "% peak",
              "timm img/s (med)", "timm ms", "speed-up best (med)"]
    body = []
    for r in report["results"]:
        o, t = r["crossvit"], r.get("timm")
        compiled = (r["compile_mode"] if r["compile_mode"] != "default" else "yes") if r["compiled"] else "no"
        compiled = "cuda-graph" if r.get("cuda_graph") else compiled
        body.append([r["mode"], r["precision"], compiled, str(r["batch_size"]),
                     f"{o['best_img_s']:.1f} ({o['median_img_s']:.1f})", f"{o['best_ms']:.1f}",
                     _fmt(o["peak_memory_mb"], ".0f"), f"{100 * o['peak_fraction']:.0f}%",
                     f"{t['best_img_s']:.1f} ({t['median_img_s']:.1f})" if t else "-", f"{t['best_ms']:.1f}" if t else "-",
                     f"{r['speedup_best']:.2f}x ({r['speedup_median']:.2f}x)" if t else "-"])
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in [header, *body]]
    lines.insert(len(lines) - len(body), "  ".join("-" * w for w in widths))
    lines.append("img/s from the best round (median in brackets); speed-up = our img/s / timm's (latency: timm's ms / ours)")
    cpu = report.get("cpu_support")
    if cpu and "bf16" in report["matmul_peak_gflops"] and not cpu["native_bf16"]:
        lines.append("bf16 is emulated on this CPU (no AVX512-BF16 or AMX): it runs, far slower than fp32, and our bf16 "
                     "fast paths stay off where oneDNN cannot compute bf16; prefer fp32 here")
    return "\n".join(lines)


def to_csv(report: dict) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(flat_rows(report))
    return out.getvalue()
