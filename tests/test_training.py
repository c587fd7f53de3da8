"""Training end to end on generated data: results, files, resumption, DDP, fine-tuning (faults: tests/faults)."""

import json
import math
import re
import subprocess
import sys

import pytest
import torch

import crossvit
from crossvit import CrossViTError
from crossvit.cli import main
from crossvit.runconfig import load_config, save_config
from crossvit.training.setup import resolve
from crossvit.training.state import load_state
from crossvit.training.trainer import start_or_resume, train

from imagegen import make_folder_dataset
from tinyrun import PLAIN, TINY, assert_same_weights, tiny_config, weights


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder_dataset(tmp_path_factory.mktemp("data"), classes=3, train_per_class=16, val_per_class=8)


@pytest.mark.usefixtures("cpu_mode")  # on this CPU, then as a generic one
def test_trains_writes_its_files_and_learns(folder, tmp_path):
    result = train(tiny_config(folder, "epochs=4", *PLAIN), tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "curves.png", "last.pth", "best.pth"):
        assert (run / name).is_file(), name
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert result.final.top1 > 80  # three colours: far above the 33% of chance
    assert len(result.final.branch_top1) == 2 and result.final.samples == 24
    # The resolved config is saved and rebuilds the same run config.
    assert load_config(str(run / "config.yaml")) == resolve(tiny_config(folder, "epochs=4", *PLAIN), torch.device("cpu"))
    # best.pth is a model checkpoint that rebuilds itself, with its class names.
    model = crossvit.create_model(checkpoint=run / "best.pth")
    assert model.meta.class_names == ("class_0", "class_1", "class_2")
    best = max(m["val_top1"] for m in metrics)
    assert result.best_top1 == best


@pytest.mark.usefixtures("cpu_mode")  # on this CPU, then as a generic one
def test_eval_command_reproduces_the_training_metrics(folder, tmp_path, capsys):
    train(tiny_config(folder, *PLAIN), tmp_path / "run")
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    capsys.readouterr()  # the training's own output
    assert main(["eval", str(tmp_path / "run" / "last.pth"), "--json", "--output", str(tmp_path / "ev")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["top1"] == pytest.approx(last["val_top1"]) and report["samples"] == 24
    assert report["branch_top1"] == pytest.approx(last["val_branch_top1"])
    assert sum(map(sum, report["confusion"])) == 24
    assert (tmp_path / "ev" / "confusion.png").stat().st_size > 1000


def test_resume_after_an_interruption_gives_the_uninterruptedweights(folder, tmp_path):
    """With the paper's augmentation on, a run stopped mid-epoch and resumed ends where a run
    that was never stopped ends, bit for bit."""
    aug = ["aug.crop=rrc", "aug.randaugment=rand-m9-mstd0.5-inc1", "aug.mixup=0.8", "aug.cutmix=1.0",
           "model.drop_path_rate=0.1", "train.ema=0.9"]
    train(tiny_config(folder, *aug), tmp_path / "straight")

    config = tiny_config(folder, *aug)
    calls = {"n": 0}

    from crossvit.training import trainer

    real = trainer.StopSignals

    class StopAtStep7(real):  # as if SIGTERM arrived during step 7 (of 12)
        @property
        def requested(self):
            calls["n"] += 1
            return calls["n"] == 7

        @requested.setter
        def requested(self, value):
            pass

    trainer.StopSignals = StopAtStep7
    try:
        stopped = train(config, tmp_path / "resumed")
    finally:
        trainer.StopSignals = real
    assert stopped.interrupted
    progress = torch.load(tmp_path / "resumed" / "last.pth", weights_only=True)["progress"]
    assert (progress["epoch"], progress["step_in_epoch"]) == (1, 1)
    train(config, tmp_path / "resumed", load_state(tmp_path / "resumed" / "last.pth"))
    assert_same_weights(tmp_path / "straight" / "last.pth", tmp_path / "resumed" / "last.pth")


def test_start_or_resume_picks_the_config_and_state_the_commands_train_with(folder, tmp_path):
    """A new run takes its recipe; a started one continues from its last.pth, or from its
    config.yaml when it stopped before its first checkpoint, with the overrides given."""
    run = tmp_path / "run"
    tiny = tiny_config(folder, *PLAIN, "epochs=1")
    config, state = start_or_resume(run, "small_folder", [f"data.path={folder}"])
    assert state is None and config == load_config("small_folder", [f"data.path={folder}"])
    with pytest.raises(CrossViTError, match="nothing to resume"):
        start_or_resume(run, "small_folder", resume=True)
    assert start_or_resume(run, tiny, resume="if_started") == (tiny, None)

    run.mkdir()
    save_config(resolve(tiny, torch.device("cpu")), run / "config.yaml")  # as a run killed early leaves it
    config, state = start_or_resume(run, "small_folder", ["epochs=3"], resume="if_started")
    assert state is None and config.epochs == 3 and config.data.path == str(folder)

    train(tiny, run)
    config, state = start_or_resume(run, "small_folder", ["epochs=2"], resume=True)
    assert state.progress.epoch == 1 and config.epochs == 2 and config.data.path == str(folder)
    with pytest.raises(CrossViTError, match="already holds a run"):
        train(tiny, run)  # a new run, where one is


def test_a_time_limit_ends_the_run_and_its_schedule_on_the_clock(folder, tmp_path, monkeypatch):
    """train.time_limit: the lr follows the training clock and reaches its floor when the minutes
    are spent, whatever `epochs` says; resuming the finished run trains no further; a run whose
    epochs end first follows its steps."""
    from types import SimpleNamespace

    from crossvit.training import engine

    clock = {"t": 0.0}

    def one_second_later():  # each step reads the clock once: every step takes one second
        clock["t"] += 1.0
        return clock["t"]

    monkeypatch.setattr(engine, "time", SimpleNamespace(perf_counter=one_second_later))
    config = tiny_config(folder, *PLAIN, "epochs=50", "train.time_limit=0.15", "optim.min_lr=1e-5")  # 9 s; 6 steps an epoch
    result = train(config, tmp_path / "run")
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert result.epochs_done == 2 and not result.interrupted
    assert [m.get("time_limit_reached", False) for m in metrics] == [False, True]
    assert [m["train_seconds"] for m in metrics] == [6.0, 9.0]
    # After epoch 1, 6 of the 9 seconds are spent: the cosine stands at 2/3 of its way.
    lr_max, lr_min = 3e-3, 1e-5
    assert metrics[0]["lr"] == pytest.approx(lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * 2 / 3)))
    assert metrics[1]["lr"] == pytest.approx(lr_min)
    assert "val_top1" in metrics[1]  # the partial last epoch is evaluated
    before = weights(tmp_path / "run" / "last.pth")
    again = train(config, tmp_path / "run", load_state(tmp_path / "run" / "last.pth"))
    assert again.epochs_done == 2
    after = weights(tmp_path / "run" / "last.pth")
    assert all(torch.equal(before[k], after[k]) for k in before)
    # Fewer epochs than the minutes allow: the schedule follows the steps and still ends annealed.
    clock["t"] = 0.0
    short = train(tiny_config(folder, *PLAIN, "epochs=1", "train.time_limit=10", "optim.min_lr=1e-5"), tmp_path / "short")
    last = json.loads((tmp_path / "short" / "metrics.jsonl").read_text().splitlines()[-1])
    assert short.epochs_done == 1 and "time_limit_reached" not in last
    assert last["lr"] == pytest.approx(lr_min, abs=1e-6)


def test_unreadable_images_are_skipped_and_counted(folder, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(folder, data)
    (data / "train" / "class_0" / "broken.png").write_bytes(b"\x89PNG broken")
    (data / "val" / "class_1" / "empty.jpg").write_bytes(b"")
    result = train(tiny_config(data, *PLAIN, "epochs=1"), tmp_path / "run")
    assert result.bad_files == 2 and result.final.samples == 24
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text())["bad_files"] == 2
    with pytest.raises(CrossViTError, match=r"unreadable image .*(broken.png|empty.jpg).*data.strict=false"):
        train(tiny_config(data, *PLAIN, "epochs=1", "data.strict=true"), tmp_path / "strict")


def test_gradient_accumulation_matches_the_full_batch(folder, tmp_path):
    # SGD: AdamW would magnify float rounding in gradients that are zero in exact arithmetic
    # (attention key biases), which is no difference in what accumulation computes.
    train(tiny_config(folder, *PLAIN, "epochs=1", "optim.name=sgd"), tmp_path / "full")
    train(tiny_config(folder, *PLAIN, "epochs=1", "optim.name=sgd", "optim.accum_steps=2"), tmp_path / "accum")
    assert_same_weights(tmp_path / "full" / "last.pth", tmp_path / "accum" / "last.pth", atol=1e-5)


def test_two_processes_match_one(folder, tmp_path):
    """torchrun --nproc_per_node=2 (gloo on CPU) gives one process's result for the same global batch."""
    args = ["small_folder", f"data.path={folder}", *TINY, *PLAIN, "data.batch_size=8", "epochs=2",
            "optim.warmup_epochs=0", "train.threads=1", "optim.clip_grad=1.0", "optim.name=sgd", "optim.lr=0.05"]
    train(load_config(args[0], args[1:]), tmp_path / "one")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "crossvit", "train", *args, "--output", str(tmp_path / "two")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_same_weights(tmp_path / "one" / "last.pth", tmp_path / "two" / "last.pth", atol=1e-5)
    one = json.loads((tmp_path / "one" / "metrics.jsonl").read_text().splitlines()[-1])
    two = json.loads((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()[-1])
    assert two["val_samples"] == one["val_samples"] == 24
    assert two["val_top1"] == pytest.approx(one["val_top1"])


def test_fine_tune_to_new_classes_and_size_with_a_frozen_backbone(folder, tmp_path):
    train(tiny_config(folder, *PLAIN, "epochs=1"), tmp_path / "src")
    four = make_folder_dataset(tmp_path / "four", classes=4, train_per_class=8, val_per_class=4, size=40)
    config = load_config("small_folder", [f"data.path={four}", "model.name=null",
                                          f"model.checkpoint={tmp_path / 'src' / 'best.pth'}", "model.img_size=40",
                                          "model.freeze_backbone=true", *PLAIN, "data.batch_size=8", "epochs=1",
                                          "train.threads=1"])
    train(config, tmp_path / "tuned")
    before, after = weights(tmp_path / "src" / "best.pth"), weights(tmp_path / "tuned" / "last.pth")
    assert after["heads.0.weight"].shape[0] == 4
    assert torch.equal(before["encoders.1.fusion.attend.0.0.q.weight"], after["encoders.1.fusion.attend.0.0.q.weight"])
    assert after["pos_embeds.0"].shape[1] == 1 + 10 * 10  # 40 px in 4 px patches

    # The run resumes from its own last.pth even when the checkpoint it started from is gone.
    (tmp_path / "src" / "best.pth").rename(tmp_path / "src" / "moved.pth")
    assert main(["train", "small_folder", "--output", str(tmp_path / "tuned"), "--resume", "epochs=2"]) == 0
    resumed = weights(tmp_path / "tuned" / "last.pth")
    assert resumed["heads.0.weight"].shape[0] == 4 and not torch.equal(resumed["heads.0.weight"], after["heads.0.weight"])


@pytest.mark.usefixtures("cpu_mode")  # on this CPU, then as a generic one
def test_bf16_autocast_trains_on_cpu(folder, tmp_path):
    result = train(tiny_config(folder, *PLAIN, "epochs=1", "train.precision=bf16"), tmp_path / "run")
    assert result.final is not None and result.final.loss == result.final.loss  # finite, not NaN


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_picks_bf16_only_where_it_is_native(folder, tmp_path, monkeypatch, native):
    import dataclasses

    from crossvit.model.fastpaths import support

    simulated = dataclasses.replace(support.detected(), native_bf16=native)  # only what precision=auto reads
    monkeypatch.setattr(support, "_override", [simulated])
    chosen = []
    real_autocast = torch.autocast
    monkeypatch.setattr(torch, "autocast", lambda *a, **k: chosen.append(k.get("dtype")) or real_autocast(*a, **k))
    train(tiny_config(folder, *PLAIN, "epochs=1", "data.limit_train=16", "train.precision=auto"), tmp_path / "run")
    saved = load_config(str(tmp_path / "run" / "config.yaml")).train.precision
    assert saved == ("bf16" if native else "fp32")
    assert (torch.bfloat16 in chosen) == native


def test_compiled_training_matches_eager(folder, tmp_path, monkeypatch):
    """The run's model goes through torch.compile (dynamo's graph, AOT autograd) and trains as eager.
    Inductor's C++ code generation is left out (aot_eager): on 2 AVX2 cores it took ~160 s of the
    suite for kernels that are torch's to test; train.compile's probe of it is tested below."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, **{"backend": "aot_eager", **kw}))
    # SGD: AdamW would magnify rounding differences in near-zero gradients up to the learning rate.
    args = (*PLAIN, "epochs=1", "data.limit_train=24", "optim.name=sgd", "optim.lr=0.05")
    train(tiny_config(folder, *args), tmp_path / "eager")
    train(tiny_config(folder, *args, "train.compile=true"), tmp_path / "compiled")
    assert load_config(str(tmp_path / "compiled" / "config.yaml")).train.compile  # it did compile
    assert_same_weights(tmp_path / "eager" / "last.pth", tmp_path / "compiled" / "last.pth", atol=1e-5)


def test_compile_probe_names_a_missing_compiler(tmp_path, monkeypatch):
    import torch._inductor.config as inductor_config

    from crossvit.training.engine import compile_unavailable

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # nothing compiled before
    torch._dynamo.reset()
    monkeypatch.setattr(inductor_config.cpp, "cxx", ("/nonexistent/c++",))
    reason = compile_unavailable(torch.device("cpu"))
    torch._dynamo.reset()
    assert reason is not None and "C++ compiler" in reason and "\n" not in reason


def test_train_compile_falls_back_to_eager_where_compile_cannot_work(folder, tmp_path, monkeypatch, caplog):
    from crossvit.training import setup

    monkeypatch.setattr(setup, "compile_unavailable", lambda device: "no C++ compiler found")
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("torch.compile called"))
    result = train(tiny_config(folder, *PLAIN, "epochs=1", "data.limit_train=16", "train.compile=true"), tmp_path / "run")
    assert result.final is not None
    assert "no C++ compiler found" in caplog.text and "training without it" in caplog.text
    assert load_config(str(tmp_path / "run" / "config.yaml")).train.compile is False


def test_cli_errors_are_one_line(folder, tmp_path):
    for args, message in (
        (["train", "small_folder", "--data", str(tmp_path / "missing")], "dataset folder .*missing does not exist"),
        (["train", "small_folder", f"--data={folder}", "optim.lr=-1"], "optim.lr=-1 must be > 0"),
        (["train", "small_folder", f"--data={folder}", "model.name=crossvit_99"], "unknown model 'crossvit_99'"),
        (["train", "small_folder", "--output", str(tmp_path / "none"), "--resume"], "nothing to resume"),
        (["train", "fashion_mnist", "--data", str(tmp_path)], "Fashion-MNIST not found.*apt-get install"),
    ):
        result = subprocess.run([sys.executable, "-m", "crossvit", *args], capture_output=True, text=True)
        assert result.returncode == 2, (args, result.stderr[-500:])
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("crossvit train: error:"), result.stderr[-500:]
        assert re.search(message, lines[0]), lines[0]
