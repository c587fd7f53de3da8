"""Capability checks and per-machine behaviour: the simulated CPUs, the thread share, and the
expectation a time-limited run prints for its machine."""

import dataclasses
import math
import os

import pytest
import torch

from crossvit import CrossViTError
from crossvit.model.fastpaths import support
from crossvit.training import distributed
from crossvit.training.expectation import Expectation, top1_at
from crossvit.training.trainer import train

from imagegen import make_folder_dataset
from tinyrun import PLAIN, tiny_config


@pytest.mark.parametrize("value, expected", [("", None), ("native", None), ("generic", "generic"), ("AVX2", "avx2")])
def test_the_environment_switch_picks_a_profile(value, expected, monkeypatch):
    monkeypatch.setenv(support.ENV_VAR, value)
    chosen = support._from_environment.__wrapped__()
    assert chosen.simulated == expected
    if expected is None:
        assert chosen == support.detected()
    else:
        assert not chosen.onednn_bf16 and not chosen.native_bf16
        assert chosen.onednn_linear == (expected == "avx2" and support.detected().onednn_linear)
        assert f"{support.ENV_VAR}={expected}" in chosen.describe()


def test_an_unknown_profile_is_one_line(monkeypatch):
    monkeypatch.setenv(support.ENV_VAR, "zen9")
    with pytest.raises(CrossViTError, match=r"CROSSVIT_CPU='zen9': use 'generic'.*'avx2'"):
        support._from_environment.__wrapped__()


def test_simulation_nests_and_ends():
    real = support.cpu_support()
    with support.simulate_cpu("avx2"):
        assert support.cpu_support().simulated == "avx2"
        with support.simulate_cpu("generic"):
            assert support.cpu_support().simulated == "generic"
        assert support.cpu_support().simulated == "avx2"
    assert support.cpu_support() == real


def test_missing_capability_queries_mean_no(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: (_ for _ in ()).throw(RuntimeError("no")))
    assert support.detected.__wrapped__().native_bf16 is False


def test_fp32_linear_rule_follows_the_measurements():
    avx512 = dataclasses.replace(support.detected(), isa="AVX512")
    avx2 = dataclasses.replace(support.detected(), isa="AVX2")
    assert avx512.fp32_linear_pays(128, 401) and not avx512.fp32_linear_pays(128, 8192)
    assert avx512.fp32_linear_pays(256, 8192)
    assert not avx2.fp32_linear_pays(256, 401) and not avx2.fp32_linear_pays(768, 1604)  # batch 1-4: F.linear
    assert avx2.fp32_linear_pays(128, 12832)


def test_usable_cores_honour_affinity_and_quota(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.setattr(distributed, "_cgroup_cpu_quota", lambda: None)
    assert distributed.usable_cores() == 6
    monkeypatch.setattr(distributed, "_cgroup_cpu_quota", lambda: 2.5)  # a container of 2.5 CPUs
    assert distributed.usable_cores() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert distributed.threads_per_process() == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert distributed.threads_per_process() == 1  # never fewer than one
    monkeypatch.setattr(distributed, "_cgroup_cpu_quota", lambda: None)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    assert distributed.threads_per_process() == 2


def test_cgroup_quota_is_read_from_cpu_max(monkeypatch, tmp_path):
    files = {"/sys/fs/cgroup/cpu.max": "150000 100000\n"}
    real_read = distributed.Path.read_text

    def read_text(self, *args, **kwargs):
        if str(self) in files:
            return files[str(self)]
        if str(self).startswith("/sys/fs/cgroup"):
            raise FileNotFoundError(self)
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(distributed.Path, "read_text", read_text)
    assert distributed._cgroup_cpu_quota() == 1.5
    files["/sys/fs/cgroup/cpu.max"] = "max 100000\n"
    assert distributed._cgroup_cpu_quota() is None


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder_dataset(tmp_path_factory.mktemp("data"), classes=3, train_per_class=8, val_per_class=4)


def test_a_run_without_threads_takes_its_share_of_the_cores(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "usable_cores", lambda: 3)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")  # as torchrun sets it for 3 processes on this machine
    chosen = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: chosen.append(n))
    config = tiny_config(folder, *PLAIN, "epochs=1")
    config.train.threads = None
    train(config, tmp_path / "run")
    assert chosen == [1]
    config.train.threads = 2  # a recipe or override that names a count wins
    chosen.clear()
    train(config, tmp_path / "run2")
    assert chosen == [2]


def test_top1_at_interpolates_in_log_epochs():
    curve = {2.0: 80.0, 8.0: 90.0}
    assert top1_at(curve, 4.0) == pytest.approx(85.0)  # halfway in log2: 1 of 2 doublings
    assert top1_at(curve, 1.0) == 80.0 and top1_at(curve, 50.0) == 90.0
    assert top1_at({1.0: 50.0, 10.0: 60.0, 100.0: 65.0}, 31.6227766) == pytest.approx(62.5)


def test_forecast_comes_once_after_the_first_seconds():
    expect = Expectation({2.0: 80.0, 8.0: 90.0}, budget_seconds=600, epoch_images=1000, max_epochs=20)
    assert expect.forecast(100, 5.0, "test CPU") is None  # too early to tell
    text = expect.forecast(400, 20.0, "test CPU")  # 20 img/s for 600 s: 12 epochs
    assert "20 img/s" in text and "12.0 epochs" in text and "90.0% top-1 or above" in text
    assert expect.forecast(800, 40.0, "test CPU") is None
    slow = Expectation({2.0: 80.0, 8.0: 90.0}, budget_seconds=600, epoch_images=6000, max_epochs=20)
    assert "about 2.0 epochs" in slow.forecast(400, 20.0, "x")
    verdict = slow.verdict(4.0, 86.0)
    assert "86.00% top-1" in verdict and "85.00% at 4.0 epochs (+1.00)" in verdict
    short = slow.verdict(0.3, 70.0)  # far fewer epochs than any measured run: no figure claimed for it
    assert "70.00% top-1" in short and "no figure to compare with" in short and "(-" not in short


def test_a_time_limited_run_prints_its_expectation(folder, tmp_path, capsys):
    config = tiny_config(folder, *PLAIN, "epochs=3", "train.time_limit=0.05",
                         "expected_top1={1: 50.0, 100: 90.0}")
    result = train(config, tmp_path / "run")
    out = capsys.readouterr().out
    assert "epochs fit in 0.05 minutes" in out
    assert result.expectation and result.expectation in out
    reached = float(result.expectation.split("reached ")[1].split(" epochs")[0])
    assert 0 < reached <= result.epochs_done
    expected = 50.0 + 40.0 * math.log(max(reached, 1.0)) / math.log(100.0)
    given = float(result.expectation.split("runs give ")[1].split("%")[0])
    assert given == pytest.approx(expected, abs=0.05)  # the epochs are printed rounded


@pytest.mark.parametrize("bad", ["{0: 50}", "{2: 150}", "{two: 50}", "[1, 2]"])
def test_a_bad_expected_curve_is_one_line(bad, folder):
    with pytest.raises(CrossViTError, match="expected_top1"):
        tiny_config(folder, f"expected_top1={bad}")
