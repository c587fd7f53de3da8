"""Bad configs and command lines, through the `crossvit` command in this process.

Every mistake (an unknown key, a wrong type, a value out of range, an unknown model, missing data, a
broken recipe file, a stray word) ends with exit code 2 and exactly one line on stderr that names the
key, option or file (and the valid choices, where there are choices), before any training starts.
tests/test_train_config.py covers the messages of load_config itself; this file covers what it does
not: the command line end to end, and the mistakes it did not try.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import pytest
import torch

import crossvit
from crossvit.cli import main
from crossvit.runconfig import load_config

from imagegen import make_folder_dataset
from tinyrun import PLAIN, tiny_args, one_thread  # noqa: F401 (an autouse fixture)

SILENT_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder_dataset(tmp_path_factory.mktemp("data"), classes=3, train_per_class=8, val_per_class=4)


def run_cli(argv: list, capsys, caplog) -> tuple[int, list[str]]:
    """`crossvit ARGV` in this process: the exit code (argparse's SystemExit included) and every line
    a user would see on stderr: what was printed, log records, and warnings Python would show."""
    capsys.readouterr()
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
    lines = capsys.readouterr().err.splitlines() + [f"{r.levelname}: {r.getMessage()}" for r in caplog.records]
    lines += [f"{w.category.__name__}: {w.message}" for w in caught if not issubclass(w.category, SILENT_WARNINGS)]
    return code, lines


def assert_one_line(code: int, lines: list[str], command: str, pattern: str) -> None:
    assert code == 2, (code, lines)
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n" + "\n".join(lines)
    assert lines[0].startswith(f"crossvit {command}: error: "), lines[0]
    assert re.search(pattern, lines[0]), f"expected /{pattern}/ in: {lines[0]}"


# -- crossvit train small_folder data.path=... KEY=VALUE ------------------------------------

MODELS = ", ".join(crossvit.list_models())
BAD_OVERRIDES = [
    # unknown keys
    ("bogus=1", r"unknown config key 'bogus'; valid keys here: recipe, epochs, seed, model, data, aug, optim, train, expected_top1$"),
    ("train.thread=2", r"unknown config key 'train\.thread'; did you mean train\.threads\?"),
    ("optimm.lr=1", r"unknown config key 'optimm'; did you mean optim\? valid keys here: recipe, epochs, seed, model"),
    ("optim=3", r"optim must be a section of keys, got 3"),
    ("epochs.x=5", r"option 'epochs\.x': 'epochs' is not a section"),
    ("=5", r"argument '=5' has no key .*before '='"),
    ("optim..lr=1", r"argument 'optim\.\.lr=1' has no key \(or an empty part of one\)"),
    # wrong types
    ("epochs=abc", r"epochs='abc' is not a valid int"),
    ("optim.lr=[1]", r"optim\.lr=\[1\] is not a valid float"),
    ("data.batch_size=1.5", r"data\.batch_size=1\.5 is not a valid int"),
    ("aug.hflip=yes", r"aug\.hflip=True is not a valid float \(yes, no, on, off, true and false are booleans here\)"),
    ("epochs=", r"epochs needs a value \(a whole number\); it cannot be left empty"),
    ("model.options=[1]", r"model\.options takes a mapping"),
    # out of range
    ("optim.lr=-1", r"optim\.lr=-1 must be > 0"),
    ("optim.lr=.nan", r"optim\.lr=nan must be a finite number"),
    ("train.time_limit=.inf", r"train\.time_limit=inf must be a finite number"),
    ("epochs=0", r"epochs=0 must be >= 1"),
    ("epochs=-3", r"epochs=-3 must be >= 1"),
    ("optim.weight_decay=-0.1", r"optim\.weight_decay=-0\.1 must be >= 0"),
    ("train.threads=-1", r"train\.threads=-1 must be >= 1"),
    ("aug.mixup=-0.5", r"aug\.mixup=-0\.5 must be >= 0"),
    ("aug.cutmix=-1", r"aug\.cutmix=-1 must be >= 0"),
    ("optim.momentum=1.5", r"optim\.momentum=1\.5 must be below 1"),
    ("aug.scale=[0.9, 0.1]", r"aug\.scale=\[0\.9, 0\.1\]: .*0 < min <= max <= 1"),
    ("model.img_size=7", r"model\.img_size=7 does not fit crossvit_micro_32: branch 1: image size 7 is smaller"),
    # choices, listed
    ("aug.crop=zoom", r"aug\.crop='zoom' is not one of rrc, pad, none$"),
    ("optim.name=lamb", r"optim\.name='lamb' is not one of adamw, sgd$"),
    ("train.device=tpu", r"train\.device='tpu' is not one of auto, cpu, cuda$"),
    ("aug.randaugment=augmix-m5", r"aug\.randaugment='augmix-m5' is not a RandAugment spec .*e\.g\. rand-m9-mstd0\.5-inc1"),
    # the model
    ("model.name=crossvit_9_24", rf"unknown model 'crossvit_9_24' in model\.name; did you mean crossvit_9_240\b.*"
                                 rf"choose one of {re.escape(MODELS)}$"),
    ("model.name=resnet50", rf"unknown model 'resnet50' in model\.name; choose one of {re.escape(MODELS)}$"),
    ("model.name=null", r"model\.name is empty and there is no model\.checkpoint .*set model\.name"),
    ("model.options={fusion: nope}", r"model\.options=\{'fusion': 'nope'\} does not fit crossvit_micro_32: unknown fusion "
                                     r"'nope'; choose one of cross_attention, all_attention, class_token, pairwise, none"),
    ("model.options={num_classes: 5}", r"model\.options\.num_classes cannot be set there: it comes from the dataset"),
    ("model.options={drop_path_rate: 0.2}", r"model\.options\.drop_path_rate cannot be set there: .*model\.drop_path_rate"),
    ("model.options={bogus: 1}", r"model\.options=\{'bogus': 1\} does not fit .*unknown model option\(s\) \['bogus'\]; valid"),
]


@pytest.mark.parametrize("override, message", BAD_OVERRIDES, ids=[o for o, _ in BAD_OVERRIDES])
def test_bad_override_is_one_line_naming_the_key(override, message, data, tmp_path, capsys, caplog):
    """A bad KEY=VALUE on the command line: exit 2, one stderr line naming the key (and the valid
    choices), and no run directory, so nothing started."""
    run = tmp_path / "run"
    code, lines = run_cli(["train", *tiny_args(data, override), "--output", run], capsys, caplog)
    assert_one_line(code, lines, "train", message)
    assert not run.exists()


def test_a_good_command_line_does_start_a_run(data, tmp_path, capsys, caplog):
    """The control for the test above: the same command line without the mistake trains and
    writes its run directory, so the failures' missing directory means they stopped early."""
    run = tmp_path / "run"
    code, _ = run_cli(["train", *tiny_args(data, "epochs=1", *PLAIN), "--output", run], capsys, caplog)
    assert code == 0 and (run / "last.pth").is_file()


@pytest.mark.parametrize("overrides", [["aug.mixup=2"], ["optim.momentum=0"], ["aug.scale=[1, 1]"], ["aug.hflip=0"],
                                       ["optim.lr=1e-3"], ["model.name=null", "model.checkpoint=x.pth"], ["seed=-1"]],
                         ids=" ".join)
def test_edge_values_that_are_valid_are_accepted(overrides):
    """Values at or past an edge that are still meaningful pass the checks: mixup is a Beta alpha,
    not a probability; 1e-3 (which YAML 1.1 reads as a string) is a float; a null name with a
    checkpoint rebuilds the checkpoint's model."""
    config = load_config("small_folder", overrides)
    assert config.model.name is None or config.model.name == "crossvit_micro_32"


@pytest.mark.parametrize("placement", ["after an option", "before the options"])
def test_a_word_without_equals_is_one_line(placement, data, tmp_path, capsys, caplog):
    """`crossvit train RECIPE ... word`: not KEY=VALUE, said in one line wherever the word stands
    (after an option argparse leaves it over; before, it reaches the config)."""
    run = tmp_path / "run"
    head = ["train", "small_folder", f"data.path={data}"]
    argv = [*head, "--output", run, "fast"] if placement == "after an option" else [*head, "fast", "--output", run]
    code, lines = run_cli(argv, capsys, caplog)
    assert_one_line(code, lines, "train", r"argument 'fast' is not KEY=VALUE \(e\.g\. epochs=5 optim\.lr=1e-3\)")
    assert not run.exists()


def test_an_unknown_option_is_one_line(data, tmp_path, capsys, caplog):
    """An option the command does not have: one line, with where to look, not argparse's usage block."""
    code, lines = run_cli(["train", "small_folder", "--output", tmp_path / "run", "--epochs", "3"], capsys, caplog)
    assert_one_line(code, lines, "train", r"unrecognized arguments: --epochs 3 \(see crossvit train --help\)")
    assert not (tmp_path / "run").exists()


def test_missing_data_names_the_folder(tmp_path, capsys, caplog):
    """--data pointing nowhere: one line naming the folder and the layout expected there."""
    missing = tmp_path / "no-such-photos"
    code, lines = run_cli(["train", "small_folder", "--data", missing, "--output", tmp_path / "run"], capsys, caplog)
    assert_one_line(code, lines, "train", rf"{re.escape(str(missing))} does not exist; expected .*/train/<class>/")
    assert not (tmp_path / "run").exists()


# -- recipes ------------------------------------------------------------------------------

RECIPE_FILES = {
    "bad_syntax.yaml": ("epochs: [1, 2\noptim: {lr: 1\n", r"recipe {path} is not valid YAML: "),
    "a_list.yaml": ("- epochs: 1\n- optim: {}\n", r"recipe {path} must hold a mapping of keys, not list"),
    "a_string.yaml": ("just some words\n", r"recipe {path} must hold a mapping of keys, not str"),
    "missing_base.yaml": ("base: nowhere\nepochs: 2\n", r"recipe {path} names base: nowhere, but .*nowhere\.yaml does not exist"),
    "unknown_key_inside.yaml": ("base: SMALL_FOLDER\noptim:\n  lrr: 1\n", r"unknown config key 'optim\.lrr'; did you mean optim\.lr\?"),
}


@pytest.mark.parametrize("name", RECIPE_FILES)
def test_broken_recipe_file_is_one_line_naming_it(name, data, tmp_path, capsys, caplog):
    """A recipe file that is not YAML, not a mapping, names a missing base, or holds an unknown key."""
    from crossvit.runconfig import RECIPES_DIR

    text, message = RECIPE_FILES[name]
    path = tmp_path / name
    path.write_text(text.replace("SMALL_FOLDER", str(RECIPES_DIR / "small_folder.yaml")))
    code, lines = run_cli(["train", path, f"data.path={data}", "--output", tmp_path / "run"], capsys, caplog)
    assert_one_line(code, lines, "train", message.replace("{path}", re.escape(str(path))))
    assert not (tmp_path / "run").exists()


def test_a_recipe_path_that_does_not_exist_lists_the_recipes(tmp_path, capsys, caplog):
    """A recipe given as a path that is not there: one line naming it and the recipes there are."""
    from crossvit.runconfig import RECIPES_DIR

    missing = tmp_path / "recipes" / "mine.yaml"
    code, lines = run_cli(["train", missing, "--output", tmp_path / "run"], capsys, caplog)
    names = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
    assert_one_line(code, lines, "train", rf"no recipe '{re.escape(str(missing))}': not a file.*recipes: {re.escape(names)}$")


# -- crossvit eval CHECKPOINT with bad options ----------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = crossvit.create_model("crossvit_micro_32", dim=(32, 64), num_heads=(2, 2), depth=(1, 1), num_encoders=2,
                                  mlp_ratio=2.0, num_classes=3)
    return crossvit.save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def _one_class_folder(tmp_path: Path) -> Path:
    return make_folder_dataset(tmp_path / "one-class", classes=1, train_per_class=2, val_per_class=2)


BAD_EVAL = {
    "data that does not exist": (lambda t, d: ["--data", t / "nowhere"], r"dataset folder {tmp}/nowhere does not exist"),
    "data without splits": (lambda t, d: ["--data", t], r"image folder {tmp}/train does not exist"),
    "data with other classes": (lambda t, d: ["--data", _one_class_folder(t)],
                                r"tiny\.safetensors predicts 3 classes but {tmp}/one-class has 1"),
    "no data at all": (lambda t, d: [], r"data\.dataset=folder needs a path: --data DIR"),
    "an unknown dataset kind": (lambda t, d: ["--data", d, "--dataset", "imagenet"],
                                r"argument --dataset: invalid choice: 'imagenet' \(choose from 'fashion_mnist', 'folder', "
                                r"'cifar10', 'cifar100'\)"),
    "a batch of 0": (lambda t, d: ["--data", d, "--batch-size", "0"], r"argument --batch-size: must be at least 1, got 0"),
    "a batch that is no number": (lambda t, d: ["--data", d, "--batch-size", "lots"],
                                  r"argument --batch-size: expected a whole number, got 'lots'"),
    "a limit of 0": (lambda t, d: ["--data", d, "--limit", "0"], r"argument --limit: must be at least 1, got 0"),
    "negative workers": (lambda t, d: ["--data", d, "--workers", "-1"], r"argument --workers: must be at least 0, got -1"),
}


@pytest.mark.parametrize("case", BAD_EVAL)
def test_eval_with_bad_data_or_options_is_one_line(case, checkpoint, data, tmp_path, capsys, caplog):
    """`crossvit eval CHECKPOINT` with missing or mismatched data or a bad option: one line naming
    the folder or option (and the choices), and no eval.json written."""
    extra, message = BAD_EVAL[case]
    out = tmp_path / "eval-out"
    code, lines = run_cli(["eval", checkpoint, *extra(tmp_path, data), "--output", out], capsys, caplog)
    assert_one_line(code, lines, "eval", message.replace("{tmp}", re.escape(str(tmp_path))))
    assert not out.exists()
