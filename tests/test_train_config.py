"""Recipes and KEY=VALUE overrides: every mistake is one line naming the key."""

import copy
import re

import pytest
import torch

from crossvit import CrossViTError
from crossvit.runconfig import RECIPES_DIR, load_config, save_config


def test_overrides_change_dotted_keys():
    config = load_config("fashion_mnist", ["epochs=5", "optim.lr=1e-3", "model.name=crossvit_9_240",
                                           "aug.scale=[0.5, 1]", "model.options={fusion: pairwise}"])
    assert config.epochs == 5 and config.optim.lr == 1e-3 and config.model.name == "crossvit_9_240"
    assert config.aug.scale == (0.5, 1.0) and config.model.options == {"fusion": "pairwise"}


@pytest.mark.parametrize("override, message", [
    ("epoch=5", r"unknown config key 'epoch'; did you mean epochs\?"),
    ("optim.lrr=1", r"unknown config key 'optim.lrr'; did you mean optim.lr\?"),
    ("optim.lr=-0.1", r"optim.lr=-0.1 must be > 0"),
    ("data.batch_size=0", r"data.batch_size=0 must be >= 1"),
    ("epochs=two", r"epochs='two' is not a valid int"),
    ("train.precision=fp8", r"train.precision='fp8' is not one of fp32, bf16, fp16"),
    ("data.dataset=imagenet21k", r"data.dataset='imagenet21k' is not one of fashion_mnist, folder"),
    ("aug.scale=0.5", r"aug.scale takes 2 values"),
    ("aug.mixup_switch_prob=2", r"must be between 0 and 1"),
    ("optim.betas=[0.9, 1.0]", r"optim.betas=\[0.9, 1.0\]: each beta must be at least 0 and below 1"),
    ("epochs", r"is not KEY=VALUE"),
])
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(CrossViTError, match=message) as err:
        load_config("fashion_mnist", [override])
    assert "\n" not in str(err.value)


def test_unknown_recipe_suggests_names():
    with pytest.raises(CrossViTError, match="no recipe 'fashion_mnst'.*did you mean fashion_mnist"):
        load_config("fashion_mnst")


def test_recipe_inherits_from_its_base(tmp_path):
    (tmp_path / "base.yaml").write_text("epochs: 3\noptim:\n  lr: 0.01\n  weight_decay: 0.1\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\noptim:\n  lr: 0.02\n")
    config = load_config(str(tmp_path / "child.yaml"))
    assert (config.epochs, config.optim.lr, config.optim.weight_decay) == (3, 0.02, 0.1)
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(CrossViTError, match="names itself as a base"):
        load_config(str(tmp_path / "loop.yaml"))


def test_resolved_config_reads_back_the_same(tmp_path):
    config = load_config("fashion_mnist", ["epochs=2", "aug.scale=[0.3, 1.0]"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(str(tmp_path / "config.yaml")) == config


RECIPES = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_loads_and_says_how_to_run_it(recipe):
    config = load_config(recipe)
    header = (RECIPES_DIR / f"{recipe}.yaml").read_text().split("\n\n")[0]
    for field in ("command:", "hardware:", "time:", "expected:"):
        assert field in header, f"{recipe}.yaml's header lacks '{field}'"
    assert re.search(rf"crossvit train {recipe}\b", header)
    if config.model.name:
        import crossvit

        crossvit.get_variant(config.model.name)


def test_adamw_gets_the_configured_betas():
    import crossvit
    from crossvit.training.setup import build_optimizer, resolve

    model = crossvit.create_model("crossvit_micro_28", depth=(1, 1), num_encoders=1)
    config = resolve(load_config("fashion_mnist", ["optim.betas=[0.9, 0.95]"]), torch.device("cpu"))
    optimizer = build_optimizer(model, config)
    assert {group["betas"] for group in optimizer.param_groups} == {(0.9, 0.95)}


def test_resolve_decides_what_the_config_leaves_open_in_a_copy(tmp_path):
    """The lr scaled to the batch, the evaluation batch and precision=auto, saved as decided and
    read back as they are; the caller's config stays as it was."""
    from crossvit.training.setup import resolve

    config = load_config("imagenet", ["data.batch_size=1024", "train.precision=auto"])
    before = copy.deepcopy(config)
    resolved = resolve(config, torch.device("cpu"))
    assert config == before
    assert resolved.optim.effective_lr == pytest.approx(5e-4 * 1024 / 512) and resolved.data.eval_batch_size == 2048
    assert resolved.train.precision in ("bf16", "fp32")
    save_config(resolved, tmp_path / "config.yaml")
    assert load_config(str(tmp_path / "config.yaml")) == resolved
    absolute = resolve(load_config("fashion_mnist", ["data.eval_batch_size=100"]), torch.device("cpu"))
    assert (absolute.optim.effective_lr, absolute.data.eval_batch_size) == (1e-3, 100)  # lr_base_batch: 0
