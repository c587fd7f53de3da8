"""A loss that becomes NaN or infinite mid-run: the run stops with one line saying what happened
and what to change, before the bad step touches the weights, and the last good checkpoint stays."""

import pytest
import torch

from crossvit.cli import main
from crossvit.training.rundir import read_metrics
from crossvit.training.trainer import train
from imagegen import make_folder_dataset
from tinyrun import PLAIN, tiny_args, tiny_config


@pytest.mark.parametrize("poison", ["nan", "inf", "-inf"])
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys, poison):
    folder = make_folder_dataset(tmp_path / "data", classes=3, train_per_class=16, val_per_class=8)
    run = tmp_path / "run"
    train(tiny_config(folder, *PLAIN, "epochs=1"), run)
    before = {name: (run / name).read_bytes() for name in ("last.pth", "best.pth")}
    real = torch.nn.CrossEntropyLoss.forward
    calls = {"n": 0}

    def poisoned(self, logits, targets):  # the third step of the resumed run goes bad
        calls["n"] += 1
        loss = real(self, logits, targets)
        return loss * float(poison) if calls["n"] == 3 else loss

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", poisoned)
    capsys.readouterr()
    assert main(["train", *tiny_args(folder, *PLAIN), "--output", str(run), "--resume", "epochs=3"]) == 2
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if "error" in line]
    assert "Traceback" not in stderr and len(errors) == 1, stderr
    assert f"loss became {float(poison)} at epoch 2, step 3" in errors[0]
    assert "last good state" in errors[0] and "optim.lr" in errors[0]
    assert {name: (run / name).read_bytes() for name in before} == before
    assert [m["epoch"] for m in read_metrics(run / "metrics.jsonl")] == [1]
