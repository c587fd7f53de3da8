"""Saving and loading: our format, foreign layouts, resampling, new heads (bad files: tests/faults/)."""

import logging
import os

import pytest
import torch

import crossvit
from crossvit.model.layouts import foreign_key_to_ours

from conftest import small_config


def _logits(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_own_checkpoint_rebuilds_the_model_without_a_name(small_model, tmp_path, suffix):
    path = crossvit.save_checkpoint(small_model, tmp_path / f"model{suffix}", meta={"note": "kept"})
    rebuilt = crossvit.create_model(checkpoint=path)
    assert rebuilt.config == small_model.config
    assert rebuilt.meta.name == "crossvit_micro_32"
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(_logits(rebuilt, x), _logits(small_model, x))
    assert crossvit.read_checkpoint(path).meta["note"] == "kept"


def test_saving_is_atomic_and_leaves_no_temporary_files(small_model, tmp_path):
    path = tmp_path / "m.safetensors"
    crossvit.save_checkpoint(small_model, path)
    first = path.read_bytes()

    class Boom(Exception):
        pass

    def explode(*args, **kwargs):
        raise Boom

    import safetensors.torch
    original = safetensors.torch.save_file
    safetensors.torch.save_file = explode
    try:
        with pytest.raises(Boom):
            crossvit.save_checkpoint(small_model, path)
    finally:
        safetensors.torch.save_file = original
    assert path.read_bytes() == first
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_wrapper_prefixes_and_nesting_are_stripped(small_model, tmp_path):
    state = {f"module._orig_mod.{k}": v for k, v in small_model.state_dict().items()}
    torch.save({"model": state, "epoch": 3}, tmp_path / "ddp.pth")
    model = small_config()
    crossvit.load_checkpoint(model, tmp_path / "ddp.pth")
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(_logits(model, x), _logits(small_model, x))


def test_loading_at_its_own_size_changes_nothing(tmp_path):
    model = crossvit.create_model("crossvit_9_240")
    crossvit.save_checkpoint(model, tmp_path / "m.safetensors")
    again = crossvit.create_model("crossvit_9_240")
    report = crossvit.load_checkpoint(again, tmp_path / "m.safetensors")
    assert report.resampled == [] and not report.heads_reset
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_240_checkpoint_into_a_408_model(tmp_path):
    torch.manual_seed(0)
    small = crossvit.create_model("crossvit_15_dagger_240").eval()
    crossvit.save_checkpoint(small, tmp_path / "m.safetensors")
    big = crossvit.create_model("crossvit_15_dagger_408", checkpoint=tmp_path / "m.safetensors").eval()
    assert [tuple(p.shape) for p in big.pos_embeds] == [(1, 1 + 34 * 34, 192), (1, 1 + 24 * 24, 384)]
    # The CLS embedding is carried over as it is; the grid is a smooth resampling of the old one.
    assert torch.equal(big.pos_embeds[0][:, 0], small.pos_embeds[0][:, 0])
    old = small.pos_embeds[0][0, 1:].reshape(20, 20, -1)
    new = big.pos_embeds[0][0, 1:].reshape(34, 34, -1)
    torch.testing.assert_close(new[0, 0], old[0, 0], atol=0.02, rtol=0)  # corners stay close
    image = torch.rand(1, 3, 240, 240)
    with torch.no_grad():
        low = small(image)
        high = big(torch.nn.functional.interpolate(image, size=408, mode="bicubic", align_corners=False))
    assert torch.isfinite(high).all()
    # Same weights on the same picture at a higher resolution: logits stay strongly correlated.
    assert torch.corrcoef(torch.stack([low[0], high[0]]))[0, 1] > 0.8


def test_new_class_count_keeps_all_but_the_heads(tmp_path, caplog):
    model = crossvit.create_model("crossvit_9_240")
    crossvit.save_checkpoint(model, tmp_path / "m.safetensors")
    with caplog.at_level(logging.WARNING, logger="crossvit"):
        tuned = crossvit.create_model("crossvit_9_240", num_classes=10, checkpoint=tmp_path / "m.safetensors")
    assert "keeping everything but the heads" in caplog.text
    assert tuned.heads[0].out_features == 10
    torch.testing.assert_close(tuned.encoders[2].fusion.attend[1][0].q.weight, model.encoders[2].fusion.attend[1][0].q.weight)


def test_rgb_weights_into_a_grey_model(small_model, tmp_path):
    crossvit.save_checkpoint(small_model, tmp_path / "rgb.safetensors")
    grey = small_config(in_chans=1)
    report = crossvit.load_checkpoint(grey, tmp_path / "rgb.safetensors")
    assert report.adapted == ["tokenizers.0.proj.weight", "tokenizers.1.proj.weight"]
    # A grey image through the summed filters equals the same grey image in three channels.
    g = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(_logits(grey, g), _logits(small_model, g.expand(-1, 3, -1, -1)))


def test_official_key_names_map_onto_ours():
    assert foreign_key_to_ours("blocks.2.fusion.1.attn.wk.bias") == "encoders.2.fusion.attend.1.0.k.bias"
    assert foreign_key_to_ours("blocks.0.fusion.0.norm1.weight") == "encoders.0.fusion.attend.0.0.norm.weight"
    assert foreign_key_to_ours("blocks.0.blocks.1.3.norm1.weight") == "encoders.0.branches.1.3.norm1.weight"
    assert foreign_key_to_ours("blocks.1.revert_projs.0.2.weight") == "encoders.1.fusion.revert.0.2.weight"
    assert foreign_key_to_ours("pos_embed_1") == foreign_key_to_ours("pos_embed.1") == "pos_embeds.1"


def test_non_strict_loading_reports_instead_of_failing(tmp_path):
    crossvit.save_checkpoint(crossvit.create_model("crossvit_9_240"), tmp_path / "nine.safetensors")
    model = crossvit.create_model("crossvit_9_240", depth=(1, 4))
    report = crossvit.load_checkpoint(model, tmp_path / "nine.safetensors", strict=False)
    assert report.missing and all(".branches.1.3." in k for k in report.missing)


def test_foreign_checkpoint_needs_a_name(tmp_path):
    torch.save({"pos_embed.0": torch.zeros(1), "blocks.0.x": torch.zeros(1)}, tmp_path / "off.pth")
    with pytest.raises(crossvit.CrossViTError, match="official layout.*pass the model name"):
        crossvit.create_model(checkpoint=tmp_path / "off.pth")
