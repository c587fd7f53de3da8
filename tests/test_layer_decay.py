"""Layer-wise learning-rate decay: the depth of every parameter, and timm's groups built from it."""

import json

import pytest

import crossvit

# crossvit_18_240: 3 encoders, each a 1-block S-branch and a 6-block L-branch, then the fusion.
CROSSVIT_18_DEPTHS = {
    "tokenizers.0.proj.weight": 0, "cls_tokens.1": 0, "pos_embeds.0": 0,
    "encoders.0.branches.0.0.attn.qkv.weight": 1, "encoders.0.branches.1.0.mlp.fc1.bias": 1,
    "encoders.0.branches.1.5.norm2.weight": 6, "encoders.0.fusion.attend.0.0.q.weight": 7,
    "encoders.0.fusion.project.1.2.weight": 7,
    "encoders.1.branches.0.0.norm1.weight": 8, "encoders.1.branches.1.3.attn.proj.weight": 11,
    "encoders.1.fusion.revert.0.0.weight": 14,
    "encoders.2.branches.1.5.mlp.fc2.weight": 20, "encoders.2.fusion.attend.1.0.v.bias": 21,
    "norms.0.weight": 22, "heads.1.bias": 22,
}


@pytest.fixture(scope="module")
def crossvit_18():
    return crossvit.create_model("crossvit_18_240")


def test_depths_of_crossvit_18_match_a_hand_written_table(crossvit_18):
    names = dict(crossvit_18.named_parameters())
    for name, depth in CROSSVIT_18_DEPTHS.items():
        assert name in names, name
        assert crossvit_18.layer_depth(name) == depth, name
    assert {crossvit_18.layer_depth(n) for n in names} == set(range(23))  # no depth left empty
    coarse = {n: crossvit_18.layer_depth(n, coarse=True) for n in names}
    assert coarse["pos_embeds.0"] == 0 and coarse["encoders.2.fusion.attend.1.0.v.bias"] == 3
    assert coarse["heads.0.weight"] == 4


def test_timms_layer_decay_groups_follow_the_depths(crossvit_18):
    from timm.optim._param_groups import param_groups_layer_decay

    groups = param_groups_layer_decay(crossvit_18, weight_decay=0.05, layer_decay=0.75,
                                      no_weight_decay_list=crossvit_18.no_weight_decay())
    scale_of = {}
    for group in groups:
        for p in group["params"]:
            scale_of[id(p)] = (group["lr_scale"], group["weight_decay"])
    names = dict(crossvit_18.named_parameters())
    for name, depth in CROSSVIT_18_DEPTHS.items():
        scale, decay = scale_of[id(names[name])]
        assert scale == pytest.approx(0.75 ** (22 - depth)), name
        assert decay == (0.0 if names[name].ndim <= 1 or name.startswith(("cls_tokens", "pos_embeds")) else 0.05)


def test_a_run_with_layer_decay_logs_and_saves_its_groups(tmp_path):
    from imagegen import make_folder_dataset
    from tinyrun import PLAIN, tiny_config

    from crossvit.training.trainer import train

    folder = make_folder_dataset(tmp_path / "data", classes=2, train_per_class=8, val_per_class=2)
    config = tiny_config(folder, *PLAIN, "epochs=1", "optim.layer_decay=0.5", "optim.warmup_epochs=0")
    train(config, tmp_path / "run")
    groups = json.loads((tmp_path / "run" / "lr_groups.json").read_text())
    # the tiny model: 2 encoders of one block per branch, then the fusion: depths 0..5
    depths = sorted({tuple(g["depths"]) for g in groups})
    assert depths == [(d, d) for d in range(6)]
    lr = 3e-3
    for g in groups:
        assert g["lr_scale"] == pytest.approx(0.5 ** (5 - g["depths"][0]))
        assert g["lr"] == pytest.approx(lr * g["lr_scale"])
    assert sum(g["parameters"] for g in groups) == sum(p.numel() for p in crossvit.create_model(
        checkpoint=tmp_path / "run" / "last.pth").parameters())


def test_layer_decay_1_is_the_plain_optimizer(tmp_path):
    from imagegen import make_folder_dataset
    from tinyrun import PLAIN, assert_same_weights, tiny_config

    from crossvit.training.trainer import train

    folder = make_folder_dataset(tmp_path / "data", classes=2, train_per_class=8, val_per_class=2)
    train(tiny_config(folder, *PLAIN, "epochs=1"), tmp_path / "plain")
    train(tiny_config(folder, *PLAIN, "epochs=1", "optim.layer_decay=1.0"), tmp_path / "one")
    assert_same_weights(tmp_path / "plain" / "last.pth", tmp_path / "one" / "last.pth")
    assert not (tmp_path / "one" / "lr_groups.json").exists()


def test_layer_decay_above_one_is_one_line(tmp_path):
    from crossvit.runconfig import load_config

    with pytest.raises(crossvit.CrossViTError, match=r"optim.layer_decay=1.5 must be at most 1"):
        load_config("small_folder", ["optim.layer_decay=1.5"])
