"""`crossvit bench`: what it reports is consistent with itself and with timm's model."""

import csv
import json

import pytest
import torch

from crossvit.cli import main
from crossvit.analysis import benchmark
from crossvit.analysis.models_table import describe

FAST = ["--rounds", "2", "--round-seconds", "0.01", "--threads", "2"]


def _run(capsys, *argv):
    assert main(["bench", *argv, "--json", *FAST]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.usefixtures("cpu_mode")  # on this CPU, then as a generic one
def test_report_is_consistent(capsys, tmp_path, request):
    report = _run(capsys, "crossvit_micro_32", "--mode", "latency", "infer", "train", "--batch-size", "4",
                  "--precision", "fp32", "bf16", "--csv", str(tmp_path / "b.csv"))
    rows = report["results"]
    assert [(r["mode"], r["precision"]) for r in rows] == [
        (m, p) for p in ("fp32", "bf16") for m in ("latency", "infer", "train")]
    for r in rows:
        ours = r["crossvit"]
        assert r["batch_size"] == (1 if r["mode"] == "latency" else 4)
        assert len(ours["rounds_ms"]) == 2
        assert ours["best_ms"] == pytest.approx(min(ours["rounds_ms"]))
        assert ours["best_img_s"] == pytest.approx(1000 * r["batch_size"] / ours["best_ms"])
        assert ours["median_img_s"] <= ours["best_img_s"]
        assert 0 < ours["peak_fraction"]
    cpu = report["cpu_support"]  # the machine's capabilities, printed with every table
    assert cpu["isa"] and cpu["text"] and isinstance(cpu["native_bf16"], bool)
    assert (cpu["simulated"] == "generic") == (request.getfixturevalue("cpu_mode") == "generic")
    # counted on real weights (fused kernels) as on the meta device (`crossvit models`: plain kernels)
    assert report["gmacs"] == pytest.approx(describe("crossvit_micro_32")["gmacs"], abs=1e-3)
    with open(tmp_path / "b.csv") as f:
        table = list(csv.DictReader(f))
    assert [row["mode"] for row in table] == [r["mode"] for r in rows]
    assert float(table[1]["crossvit_img_s"]) == pytest.approx(rows[1]["crossvit"]["best_img_s"])


def test_compile_mode_reaches_torch_compile(capsys, monkeypatch):
    modes = []
    monkeypatch.setattr(benchmark.torch, "compile", lambda model, mode=None: modes.append(mode) or model)
    report = _run(capsys, "crossvit_micro_32", "--mode", "infer", "--batch-size", "2", "--compile", "both",
                  "--compile-mode", "reduce-overhead")
    assert modes == ["reduce-overhead"]
    assert [(r["compiled"], r["compile_mode"]) for r in report["results"]] == [(False, None), (True, "reduce-overhead")]


@pytest.mark.slow
def test_compare_with_timm_uses_the_same_weights(capsys):
    report = _run(capsys, "crossvit_tiny_240", "--compare", "timm", "--mode", "latency")
    assert report["max_abs_diff_vs_timm_fp32"] < 1e-4
    row = report["results"][0]
    assert row["speedup_best"] == pytest.approx(row["crossvit"]["best_img_s"] / row["timm"]["best_img_s"])


def test_out_of_memory_halves_the_batch(capsys, monkeypatch):
    real = benchmark.make_step

    def fussy(model, setting, *args):
        if setting.batch_size > 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 TB")
        return real(model, setting, *args)

    monkeypatch.setattr(benchmark, "make_step", fussy)
    assert main(["bench", "crossvit_micro_32", "--mode", "infer", "--batch-size", "8", "--json", *FAST]) == 0
    out = capsys.readouterr().out
    assert "out of memory at batch 8" in out and "trying batch 4" in out and "trying batch 2" in out
    assert json.loads(out[out.index("{"):])["results"][0]["batch_size"] == 2


def test_table_names_the_cpu_and_says_when_bf16_is_emulated(capsys, monkeypatch):
    from conftest import simulated_cpu

    with simulated_cpu(monkeypatch, "avx2"):
        assert main(["bench", "crossvit_micro_32", "--mode", "latency", "--precision", "fp32", "bf16", *FAST]) == 0
    out = capsys.readouterr().out
    assert "CPU: AVX2, bf16 emulated (slow), oneDNN linear" in out and "matmul peak: fp32" in out
    assert "bf16 is emulated on this CPU" in out


@pytest.mark.parametrize("argv, message", [
    (["crossvit_micro_32", "--compare", "timm"], "timm has no model named crossvit_micro_32"),
    (["crossvit_99"], "crossvit_99"),
    (["crossvit_micro_32", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["crossvit_micro_32", "--cuda-graph", "--device", "cpu"], "--cuda-graph needs a GPU"),
])
def test_bad_input_is_one_line(argv, message, capsys):
    assert main(["bench", *argv, *FAST]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_cuda_graph_replays_what_eager_inference_runs(capsys):
    setting = benchmark.Setting("infer", 4, "bf16", cuda_graph=True)
    model = benchmark.build_contenders("crossvit_micro_32", False, None, torch.device("cuda"))[0].model
    replay = benchmark.make_step(model, setting, 32, 3, torch.device("cuda"))
    assert isinstance(replay.__self__, torch.cuda.CUDAGraph)  # the step is the graph's replay
    replay()
    torch.cuda.synchronize()
    report = _run(capsys, "crossvit_micro_32", "--device", "cuda", "--cuda-graph", "--mode", "latency", "infer",
                  "--precision", "fp32", "bf16", "--batch-size", "4")
    assert [(r["mode"], r["cuda_graph"]) for r in report["results"]] == [("latency", True), ("infer", True)] * 2
    assert main(["bench", "crossvit_micro_32", "--device", "cuda", "--cuda-graph", "--mode", "train", *FAST]) == 2
    assert "--cuda-graph replays eager inference only" in capsys.readouterr().err
    for r in report["results"]:
        assert r["crossvit"]["best_img_s"] > 0


def test_the_commands_choices_are_the_benchmarks():
    import argparse

    from crossvit.analysis import benchmark
    from crossvit.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    choices = {a.dest: tuple(a.choices) for a in commands.choices["bench"]._actions if a.choices}
    assert choices["mode"] == benchmark.MODES and choices["precision"] == tuple(benchmark.PRECISIONS)
