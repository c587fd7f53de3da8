"""`crossvit attention` and `attention_maps`: CLS attention checked against weights recomputed from
each layer's own inputs, rollout's algebra, and the files the command writes."""

import numpy as np
import pytest
import torch
from PIL import Image

import crossvit
from crossvit import CrossViTError
from crossvit.cli import main
from crossvit.analysis.attention import attention_maps, rollout

from conftest import small_config


def model_with(**overrides):
    torch.manual_seed(0)
    return small_config(num_classes=3, num_heads=(2, 4), **overrides).eval()  # heads differ per branch


def cls_weights(query: torch.Tensor, keys: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) of one query over all keys, per head: (heads, keys)."""
    q = query.view(heads, -1)
    k = keys.view(keys.shape[0], heads, -1).transpose(0, 1)
    return (torch.einsum("hd,hnd->hn", q, k) / q.shape[-1] ** 0.5).softmax(-1)


def layer_inputs(model, x):
    """What each attention layer of interest saw, captured by hooks on a plain forward pass."""
    seen = {}

    def keep(name):  # a cross-attention layer is called with (agent, the tokens it asks): join them
        return lambda module, args: seen.__setitem__(name, torch.cat(args, dim=1)[0].detach())

    hooks = [block.attn.register_forward_pre_hook(keep(f"encoder{k}_self_branch{b}"))
             for k, e in enumerate(model.encoders) for b, blocks in enumerate(e.branches) for block in blocks[-1:]]
    if model.config.fusion == "cross_attention":
        hooks += [e.fusion.attend[i][0].register_forward_pre_hook(keep(f"encoder{k}_cross{i}"))
                  for k, e in enumerate(model.encoders) for i in range(2)]
    else:
        hooks += [e.fusion.attns[0].register_forward_pre_hook(keep(f"encoder{k}_all")) for k, e in enumerate(model.encoders)]
    with torch.no_grad():
        model(x[None])
    for h in hooks:
        h.remove()
    return seen


@torch.no_grad()
def test_cross_attention_maps_are_the_cls_rows_recomputed():
    model, x = model_with(), torch.randn(3, 32, 32)
    maps = attention_maps(model, x)
    seen = layer_inputs(model, x)
    grids, heads = model.grids, [b.num_heads for b in model.config.branches]
    assert set(maps) == {f"encoder{k}_{m}" for k in range(2) for m in
                         ("self_branch0", "self_branch1", "fusion0_branch0_over_branch1", "fusion0_branch1_over_branch0")}
    for k, encoder in enumerate(model.encoders):
        for b in range(2):
            block = encoder.branches[b][-1].attn
            q, keys, _ = block.qkv(seen[f"encoder{k}_self_branch{b}"]).chunk(3, dim=-1)
            expected = cls_weights(q[0], keys, heads[b])  # CLS over [CLS || own patches]
            got = maps[f"encoder{k}_self_branch{b}"]
            assert got.shape == (heads[b], grids[b], grids[b])
            np.testing.assert_allclose(got.reshape(heads[b], -1), expected[:, 1:].numpy(), atol=1e-5)
            np.testing.assert_allclose(got.sum((1, 2)) + expected[:, 0].numpy(), 1, atol=1e-5)
        for i in range(2):
            j, layer = 1 - i, encoder.fusion.attend[i][0]
            normed = layer.norm(seen[f"encoder{k}_cross{i}"])
            expected = cls_weights(layer.q(normed[0]), layer.k(normed), heads[j])  # uses branch j's heads
            got = maps[f"encoder{k}_fusion0_branch{i}_over_branch{j}"]
            assert got.shape == (heads[j], grids[j], grids[j])
            np.testing.assert_allclose(got.reshape(heads[j], -1), expected[:, 1:].numpy(), atol=1e-5)
            np.testing.assert_allclose(got.sum((1, 2)) + expected[:, 0].numpy(), 1, atol=1e-5)
    assert all(m.attention is None for m in model.modules() if hasattr(m, "attention"))  # switched off again


@torch.no_grad()
def test_all_attention_maps_pick_each_cls_row_and_the_other_branchs_patches():
    model, x = model_with(fusion="all_attention"), torch.randn(3, 32, 32)
    maps = attention_maps(model, x)
    seen = layer_inputs(model, x)
    g0, g1 = model.grids
    heads = model.encoders[0].fusion.attns[0].num_heads
    for k, encoder in enumerate(model.encoders):
        attn = encoder.fusion.attns[0]
        q, keys, _ = attn.qkv(seen[f"encoder{k}_all"]).chunk(3, dim=-1)  # the hook saw the normed tokens
        cls0, cls1 = 0, 1 + g0 * g0  # token order: CLS 0, patches 0, CLS 1, patches 1
        over1 = cls_weights(q[cls0], keys, heads)[:, cls1 + 1:]
        over0 = cls_weights(q[cls1], keys, heads)[:, 1:cls1]
        np.testing.assert_allclose(maps[f"encoder{k}_fusion0_branch0_over_branch1"], over1.reshape(heads, g1, g1), atol=1e-5)
        np.testing.assert_allclose(maps[f"encoder{k}_fusion0_branch1_over_branch0"], over0.reshape(heads, g0, g0), atol=1e-5)


def test_rollout_is_row_stochastic_and_chains_layers_in_order():
    torch.manual_seed(0)
    a, b = (torch.rand(3, 5, 5).softmax(-1) for _ in range(2))
    one, two = rollout([a]), rollout([a, b])
    np.testing.assert_allclose(two.sum(-1), 1, atol=1e-12)
    np.testing.assert_allclose(one, (a.mean(0) + torch.eye(5)) / 2, atol=1e-6)  # rows of a sum to 1
    np.testing.assert_allclose(two, ((b.mean(0) + torch.eye(5)) / 2) @ ((a.mean(0) + torch.eye(5)) / 2), atol=1e-6)
    identity = torch.eye(5).expand(2, 5, 5)
    np.testing.assert_allclose(rollout([identity, identity]), torch.eye(5), atol=1e-12)


def test_rollout_map_is_the_cls_row_through_every_block_of_the_branch():
    model, x = model_with(), torch.randn(3, 32, 32)
    maps = attention_maps(model, x, with_rollout=True)
    model.keep_attention()
    with torch.no_grad():
        model(x[None])
    for b, g in enumerate(model.grids):
        layers = [block.attn.attention[0] for e in model.encoders for block in e.branches[b]]
        assert len(layers) == 2 * model.config.branches[b].depth
        assert maps[f"branch{b}_rollout"].shape == (1, g, g)
        np.testing.assert_allclose(maps[f"branch{b}_rollout"].ravel(), rollout(layers)[0, 1:].numpy(), atol=1e-6)


@pytest.mark.parametrize("fusion", ["class_token", "pairwise"])
def test_fusions_without_attention_give_self_attention_only(fusion):
    maps = attention_maps(model_with(fusion=fusion), torch.randn(3, 32, 32))
    assert sorted(maps) == [f"encoder{k}_self_branch{b}" for k in range(2) for b in range(2)]


def test_command_writes_maps_figures_and_says_what_it_wrote(tmp_path, capsys):
    model = model_with()
    checkpoint = crossvit.save_checkpoint(model, tmp_path / "m.safetensors", meta={"class_names": ["a", "b", "c"]})
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    out = tmp_path / "out"
    assert main(["attention", str(checkpoint), str(tmp_path / "x.png"), "--output", str(out), "--per-head", "--rollout"]) == 0
    printed = capsys.readouterr().out

    from crossvit.data.images import load_image
    from crossvit.data.transforms import eval_transform

    maps = attention_maps(model, eval_transform(model.meta)(load_image(str(tmp_path / "x.png"))), with_rollout=True)
    assert (out / "attention.png").is_file() and str(out / "attention.png") in printed
    for name, heads in maps.items():
        np.testing.assert_allclose(np.load(out / f"{name}.npy"), heads.mean(0), atol=1e-6)
        assert str(out / f"{name}.npy") in printed
        if len(heads) > 1:  # rollout has one map, no heads
            assert np.load(out / f"{name}_heads.npy").shape == heads.shape
            assert (out / f"{name}_heads.png").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "out", "x.png"]  # no staging left


def test_command_says_so_when_the_fusion_has_no_attention(tmp_path, capsys):
    checkpoint = crossvit.save_checkpoint(model_with(fusion="none"), tmp_path / "m.safetensors")
    Image.new("L", (32, 32), 128).save(tmp_path / "grey.png")
    assert main(["attention", str(checkpoint), str(tmp_path / "grey.png"), "--output", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("fusion 'none' has no attention weights")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["attention.png"] + [f"encoder{k}_self_branch{b}.npy" for k in range(2) for b in range(2)])


def test_no_cls_token_and_unreadable_images_fail_before_writing(tmp_path, capsys):
    with pytest.raises(CrossViTError, match="CLS token"):
        attention_maps(model_with(cls_token=False), torch.randn(3, 32, 32))
    no_cls = crossvit.save_checkpoint(model_with(cls_token=False), tmp_path / "no_cls.safetensors")
    ok = crossvit.save_checkpoint(model_with(), tmp_path / "ok.safetensors")
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert main(["attention", str(no_cls), str(tmp_path / "x.png"), "--output", str(tmp_path / "a")]) == 2
    assert main(["attention", str(ok), str(tmp_path / "broken.png"), "--output", str(tmp_path / "b")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and all(e.startswith("crossvit attention: error: ") for e in errors)
    assert "CLS token" in errors[0] and "broken.png" in errors[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.png", "no_cls.safetensors", "ok.safetensors", "x.png"]
