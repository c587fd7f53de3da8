"""Every fusion scheme of the paper's Table 6, the CLS-free variant, more than two branches,
several fusion layers and gradient checkpointing, on small models."""

import pytest
import torch

import crossvit
from crossvit.model.config import FUSIONS
from crossvit.model.fusion import FUSION_SCHEMES, projected_cross_attention
from crossvit import CrossViT
from crossvit.analysis.flops import count_macs

from conftest import small_config

SCHEMES = ["cross_attention", "all_attention", "class_token", "pairwise", "none"]


def test_the_five_schemes_are_registered():
    assert set(FUSION_SCHEMES) == set(FUSIONS) == set(SCHEMES)


def _assert_every_parameter_learns(model, x):
    model.train()
    loss = torch.nn.functional.cross_entropy(model(x), torch.arange(x.shape[0]) % model.num_classes)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


@pytest.mark.parametrize("fusion_layers", [1, 2])
def test_folded_cross_attention_equals_projecting_every_token(fusion_layers):
    """With one query, the key projection folds into it and the value projection follows the
    weighted sum: the logits and every gradient equal those of projecting every token."""
    torch.manual_seed(0)
    model = small_config(fusion_layers=fusion_layers).train()
    x = torch.randn(4, 3, 32, 32)

    def logits_and_grads():
        model.zero_grad()
        out = model(x)
        out.square().sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    folded = logits_and_grads()
    with projected_cross_attention(model):
        projected = logits_and_grads()
    torch.testing.assert_close(folded[0], projected[0], rtol=1e-5, atol=1e-5)
    for name, grad in projected[1].items():
        torch.testing.assert_close(folded[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert all(layer.fold_query for layer in model.modules() if hasattr(layer, "fold_query"))  # restored


def test_cross_attention_folds_on_the_cpu_only(monkeypatch):
    """On a GPU the folded form's extra small kernels cost more than the projections it saves
    (H200, eager); meta tensors stand in for a GPU's."""
    layer = next(m for m in small_config().modules() if hasattr(m, "fold_query"))
    calls = []
    monkeypatch.setattr(type(layer), "_folded", lambda self, a, o: calls.append("folded") or a)
    monkeypatch.setattr(type(layer), "_projected", lambda self, a, o: calls.append("projected") or a)
    width = layer.q.in_features
    layer(torch.randn(2, 1, width), torch.randn(2, 5, width))
    layer.to("meta")(torch.randn(2, 1, width, device="meta"), torch.randn(2, 5, width, device="meta"))
    assert calls == ["folded", "projected"]


@pytest.mark.parametrize("cls_token", [True, False], ids=["cls", "mean-agent"])
@pytest.mark.parametrize("fusion", SCHEMES)
def test_forward_backward_reaches_every_parameter(fusion, cls_token):
    torch.manual_seed(0)
    model = small_config(fusion=fusion, cls_token=cls_token)
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 7)
    _assert_every_parameter_learns(model, x)


def test_branches_only_meet_through_the_fusion():
    """With no fusion, changing the S-branch's weights leaves the L-branch's head unchanged;
    with cross-attention it does not."""
    x = torch.randn(2, 3, 32, 32)
    for fusion, should_change in (("none", False), ("cross_attention", True)):
        torch.manual_seed(0)
        model = small_config(fusion=fusion).eval()
        before = model.branch_logits(model.forward_features(x))[1]
        with torch.no_grad():
            w = model.encoders[0].branches[0][0].mlp.fc2.weight
            w.add_(torch.randn_like(w))  # not a constant: LayerNorm would cancel a uniform shift
        after = model.branch_logits(model.forward_features(x))[1]
        assert (not torch.allclose(before, after)) == should_change, fusion


def test_cost_ordering_matches_table_6():
    macs = {}
    for fusion in SCHEMES:
        config = crossvit.create_model("crossvit_small_240", fusion=fusion).config
        with torch.device("meta"):
            macs[fusion] = count_macs(CrossViT(config), torch.zeros(1, 3, 240, 240))
    order = sorted(SCHEMES, key=macs.get)
    assert order[0] == "none" and order[-1] == "all_attention", macs
    # Table 6: 5.3 (none) 5.4 (class) 5.5 (pairwise) 5.6 (cross) 7.6 (all) GFLOPs
    assert macs["class_token"] < macs["pairwise"] < macs["cross_attention"] < macs["all_attention"]
    assert abs(macs["cross_attention"] / 1e9 - 5.6) < 0.05


def test_mean_agent_model_has_no_cls_tokens_and_pools_patches():
    model = small_config(cls_token=False)
    assert len(model.cls_tokens) == 0
    assert [p.shape[1] for p in model.pos_embeds] == [g * g for g in model.grids]
    assert not any("cls" in name for name in model.no_weight_decay())


def test_three_branches_train_a_step():
    torch.manual_seed(0)
    model = small_config(patch_size=(4, 8, 16), dim=(32, 64, 64), depth=(1, 1, 2), num_heads=(2, 2, 2))
    assert model.config.num_branches == 3 and len(model.heads) == 3
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 7, (8,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    _assert_every_parameter_learns(model, x)


@pytest.mark.parametrize("fusion", ["cross_attention", "all_attention"])
def test_several_fusion_layers(fusion):
    one = small_config(fusion=fusion)
    two = small_config(fusion=fusion, fusion_layers=2)
    assert sum(p.numel() for p in two.parameters()) > sum(p.numel() for p in one.parameters())
    _assert_every_parameter_learns(two, torch.randn(2, 3, 32, 32))


def test_fusion_layers_only_for_attention_schemes():
    with pytest.raises(crossvit.CrossViTError, match="fusion_layers"):
        small_config(fusion="class_token", fusion_layers=2)


@pytest.mark.parametrize("fusion", ["cross_attention", "pairwise"])
def test_gradient_checkpointing_gives_the_same_gradients(fusion):
    """Drop path is on, so the recomputation must also replay the same random masks."""
    x = torch.randn(4, 3, 32, 32)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = small_config(fusion=fusion, drop_path_rate=0.3).train()
        model.set_grad_checkpointing(checkpointing)
        torch.manual_seed(1)
        model(x).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-6, msg=name)


def test_gradient_checkpointing_saves_activation_memory():
    """The checkpointed forward keeps fewer tensors alive for the backward pass."""
    def saved_bytes(checkpointing):
        model = small_config(depth=(2, 4)).train()
        model.set_grad_checkpointing(checkpointing)
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(torch.randn(8, 3, 32, 32))
        return total
    assert saved_bytes(True) < 0.5 * saved_bytes(False)


def test_drop_path_schedule_follows_the_release():
    model = crossvit.create_model("crossvit_15_240", drop_path_rate=0.1)
    rates = model.config.drop_path_rates()
    flat = [r for encoder in rates for r in encoder]
    assert len(flat) == 3 * 5 and flat[0] == 0.0 and abs(flat[-1] - 0.1) < 1e-12
    encoder = model.encoders[1]
    assert encoder.branches[0][0].drop_path.rate == rates[1][0]  # S block: the slice's first rate
    assert [b.drop_path.rate for b in encoder.branches[1]] == rates[1]  # L blocks: the whole slice
    assert encoder.fusion.attend[0][0].drop_path.rate == rates[1][-1]  # fusion: the slice's last rate
