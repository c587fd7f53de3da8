"""`crossvit bench MODEL [--compare timm]`: latency, throughput and training speed, side by side."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json

import torch

from ..errors import CrossViTError
from ..model.fastpaths import cpu_support
from ..model.registry import get_variant
from ..analysis import benchmark as bm
from ..analysis.flops import model_macs


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="time inference and training, optionally against timm's CrossViT")
    p.add_argument("model", help="a registered variant, e.g. crossvit_9_240")
    p.add_argument("--mode", nargs="+", choices=bm.MODES, default=["latency", "infer"],
                   help="latency: batch 1; infer: img/s at --batch-size; train: forward+backward+AdamW step")
    p.add_argument("--precision", nargs="+", choices=tuple(bm.PRECISIONS), default=["fp32"],
                   help="fp32, or bf16/fp16 autocast")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--compile", choices=("off", "on", "both"), default="off", help="torch.compile the models")
    p.add_argument("--compile-mode", choices=("default", "reduce-overhead", "max-autotune"), default="default",
                   help="torch.compile's mode (reduce-overhead: CUDA graphs on GPU)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="replay inference as one CUDA graph, captured once (both models; CUDA, latency/infer only)")
    p.add_argument("--img-size", type=int, help="input size (default: the variant's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per setting")
    p.add_argument("--round-seconds", type=float, default=2.0, help="length of one round of one contender")
    p.add_argument("--compare", choices=("timm",), help="also time timm's model with the same weights")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--csv", metavar="PATH", help="also write the results as CSV")
    p.set_defaults(run=run)


def settings_of(args: argparse.Namespace) -> list[bm.Setting]:
    compiled = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    return [bm.Setting(mode, 1 if mode == "latency" else args.batch_size, precision, c, args.compile_mode,
                       args.cuda_graph)
            for c in compiled for precision in args.precision for mode in args.mode]


def measure(contenders: list[bm.Contender], setting: bm.Setting, img_size: int, in_chans: int,
            device: torch.device, rounds: int, round_seconds: float) -> tuple[bm.Setting, dict[str, bm.Timing]]:
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
            print(f"out of memory at batch {setting.batch_size} ({setting.mode}, {setting.precision}); "
                  f"trying batch {smaller}")
            setting = dataclasses.replace(setting, batch_size=smaller)
            if device.type == "cuda":
                torch.cuda.empty_cache()


def run_bench(args: argparse.Namespace) -> dict:
    if args.batch_size < 1:
        raise CrossViTError(f"--batch-size must be at least 1, got {args.batch_size}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CrossViTError("--device cuda: no CUDA device is available; use --device cpu")
    if args.cuda_graph:
        if device.type != "cuda":
            raise CrossViTError("--cuda-graph needs a GPU: add --device cuda, or leave --cuda-graph out on the CPU")
        if "train" in args.mode or args.compile != "off":
            raise CrossViTError("--cuda-graph replays eager inference only: use it with --mode latency infer and "
                                "without --compile (compiled CUDA graphs: --compile on --compile-mode reduce-overhead)")
    if args.threads:
        torch.set_num_threads(args.threads)
    variant = get_variant(args.model)
    contenders = bm.build_contenders(args.model, args.compare == "timm", args.img_size, device)
    img_size = args.img_size or variant.config.img_size
    in_chans = variant.config.in_chans
    macs = model_macs(contenders[0].model)
    report = {
        "model": args.model, "img_size": img_size, "gmacs": macs / 1e9, "device": str(device),
        "machine": torch.cuda.get_device_name(device) if device.type == "cuda" else bm.cpu_name(),
        "cpu_support": ({**dataclasses.asdict(cpu_support()), "text": cpu_support().describe()}
                        if device.type == "cpu" else None),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "max_abs_diff_vs_timm_fp32": bm.max_output_difference(contenders, img_size, in_chans, device)
        if args.compare else None,
        "matmul_peak_gflops": {p: bm.matmul_peak_gflops(device, p) for p in args.precision},
        "results": [],
    }
    for wanted in settings_of(args):
        setting, timings = measure(contenders, wanted, img_size, in_chans, device, args.rounds, args.round_seconds)
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


def run(args: argparse.Namespace) -> int:
    report = run_bench(args)
    if args.csv:
        from ..files import atomic_write
        from pathlib import Path

        text = to_csv(report)
        atomic_write(Path(args.csv), lambda tmp: Path(tmp).write_text(text))
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0
