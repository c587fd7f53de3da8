"""`crossvit ablate`: studies load and build, runs are shared among processes, and a small study
survives an interruption and reports what its runs' own files say."""

import csv
import io
import statistics
from pathlib import Path

import pytest
import torch

import crossvit
from crossvit import CrossViTError
from crossvit.cli import main
from crossvit.studies import specs
from crossvit.training import trainer
from crossvit.training.setup import resolve
from crossvit.runconfig import load_config
from crossvit.training.rundir import read_metrics
from imagegen import make_folder_dataset
from tinyrun import PLAIN, TINY


@pytest.mark.parametrize("name", specs.study_names())
def test_every_study_cell_builds_its_model(name, tmp_path):
    study = specs.load_study(name)
    assert len(study.cells) >= 2 and study.paper
    for job in specs.jobs(study, tmp_path, seeds=1):
        config = specs.job_config(study, job, study.budget, [])
        model = crossvit.create_model(config.model.name, num_classes=10, **config.model.options)
        assert config.seed == 0 and model.config.img_size == 28


def test_studies_resolve_the_configuration_they_were_measured_with():
    # The config.yaml of a run the fusion study made (data.eval_batch_size, optim.effective_lr and recipe filled in
    # since, as runs now save them): the demo recipe moving on must not move the studies.
    measured = load_config(str(Path(__file__).parent / "golden" / "study_fusion_cross_attention_seed0.yaml"))
    study = specs.load_study("fusion")
    job = next(j for j in specs.jobs(study, Path("unused"), seeds=1) if j.cell.name == "cross_attention")
    as_run = ["data.path=/usr/share/datasets/fashion-mnist", "train.precision=bf16", "train.threads=1"]  # chosen there
    assert resolve(specs.job_config(study, job, study.budget, as_run), torch.device("cpu")) == measured


def test_the_vs_vit_cells_cost_the_same():
    from crossvit.analysis.flops import model_macs

    study = specs.load_study("vs_vit")
    macs = []
    for job in specs.jobs(study, Path("unused"), seeds=1):
        config = specs.job_config(study, job, study.budget, [])
        macs.append(model_macs(crossvit.create_model(config.model.name, num_classes=10, **config.model.options)))
    assert len(macs) == 2 and abs(macs[0] - macs[1]) / macs[0] < 0.05, macs


@pytest.mark.parametrize("world", [1, 2, 3])
def test_processes_share_the_runs_exactly_once(world, tmp_path):
    all_jobs = specs.jobs(specs.load_study("fusion"), tmp_path, seeds=3)
    shares = [specs.shard(all_jobs, rank, world) for rank in range(world)]
    assert sorted(j.output for s in shares for j in s) == sorted(j.output for j in all_jobs)
    assert len({j.output for j in all_jobs}) == 15


@pytest.mark.parametrize("budget, expected", [("4ep", ["epochs=4", "train.time_limit=null"]),
                                              ("2.5m", ["train.time_limit=2.5", "epochs=1000"])])
def test_budget_is_epochs_or_minutes(budget, expected):
    assert specs.budget_overrides(budget) == expected


@pytest.mark.parametrize("argv, message", [
    (["ablate", "fusoin"], "did you mean fusion"),
    (["ablate", "fusion", "--budget", "4"], "budget '4' is neither epochs nor minutes"),
    (["ablate", "fusion", "--budget", "1.5ep"], "epochs must be a whole number"),
    (["ablate", "fusion", "--seeds", "0"], "--seeds must be at least 1"),
    (["ablate", "fusion", "optim.lrr=1"], "unknown config key 'optim.lrr'"),
])
def test_bad_arguments_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_a_bad_study_file_is_one_line(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("recipe: fashion_mnist\ncels: {a: {overrides: [seed=1]}}\n")
    with pytest.raises(CrossViTError, match="cells"):
        specs.load_study(str(path))
    path.write_text("recipe: fashion_mnist\nbudgte: 3ep\ncells: {a: {overrides: [seed=1]}}\n")
    with pytest.raises(CrossViTError, match="unknown key.*budgte"):
        specs.load_study(str(path))
    path.write_text("cells: {a: {overrides: [model.options.fusion]}}\n")
    with pytest.raises(CrossViTError, match="KEY=VALUE"):
        specs.load_study(str(path))


def _expected(study_dir, cell, seeds):
    finals = [read_metrics(study_dir / cell / f"seed-{s}" / "metrics.jsonl")[-1] for s in range(seeds)]
    top1 = [f["val_top1"] for f in finals]
    heads = [[f["val_branch_top1"][i] for f in finals] for i in range(2)]
    return top1, heads


def test_a_small_study_is_interrupted_resumed_and_reported_from_its_runs(tmp_path, monkeypatch, capsys):
    data = make_folder_dataset(tmp_path / "data", classes=3, train_per_class=16, val_per_class=8)
    study_file = tmp_path / "tiny.yaml"
    overrides = [*TINY, *PLAIN, "data.batch_size=8", "train.threads=1", "optim.warmup_epochs=0"]
    study_file.write_text("title: two fusions\nrecipe: small_folder\nbudget: 2ep\nseeds: 2\n"
                          f"overrides: {overrides!r}\npaper: made up\ncells:\n"
                          "  cross: {overrides: [model.options.fusion=cross_attention], paper: {top1: 81.0}}\n"
                          "  none: {overrides: [model.options.fusion=none]}\n")
    out = tmp_path / "study"
    argv = ["ablate", str(study_file), "--data", str(data), "--output", str(out)]

    calls = {"n": 0}

    class StopInTheSecondRun(trainer.StopSignals):  # as if SIGTERM came at step 3 of run 2 (12 steps each)
        @property
        def requested(self):
            calls["n"] += 1
            return calls["n"] == 15

        @requested.setter
        def requested(self, value):
            pass

    monkeypatch.setattr(trainer, "StopSignals", StopInTheSecondRun)
    assert main(argv) == 130
    assert "run the same command again" in capsys.readouterr().out
    first = out / "cross" / "seed-0" / "last.pth"
    second = out / "none" / "seed-0"
    assert [m["epoch"] for m in read_metrics(out / "cross" / "seed-0" / "metrics.jsonl")] == [1, 2]
    assert not (second / "metrics.jsonl").exists() and (second / "last.pth").exists()  # stopped in epoch 1
    finished_at = first.stat().st_mtime_ns
    assert main([*argv, "--report-only"]) == 0  # a table of what is finished, and says so
    out_text = capsys.readouterr().out
    assert "| cross | 1/2 |" in out_text and "1 of 4 runs finished so far" in out_text

    monkeypatch.setattr(trainer, "StopSignals", StopInTheSecondRun.__mro__[1])
    assert main(argv) == 0
    assert first.stat().st_mtime_ns == finished_at  # a finished run is not trained again
    rows = {r["cell"]: r for r in csv.DictReader(io.StringIO((out / "results.csv").read_text()))}
    assert set(rows) == {"cross", "none"}
    for cell in rows:
        top1, heads = _expected(out, cell, 2)
        assert int(rows[cell]["runs"]) == 2
        assert float(rows[cell]["top1_mean"]) == pytest.approx(statistics.fmean(top1), abs=1e-4)
        assert float(rows[cell]["top1_std"]) == pytest.approx(statistics.stdev(top1), abs=1e-4)
        for i in range(2):
            assert float(rows[cell][f"head{i}_mean"]) == pytest.approx(statistics.fmean(heads[i]), abs=1e-4)
    assert rows["cross"]["paper_top1"] == "81.0" and rows["none"]["paper_top1"] == ""
    assert int(rows["cross"]["macs"]) > int(rows["none"]["macs"])  # cross-attention costs MACs
    report = (out / "results.md").read_text()
    assert "| cross | 2/2 |" in report and f"crossvit ablate {study_file}" in report
    assert (out / "accuracy_vs_macs.png").stat().st_size > 5000
