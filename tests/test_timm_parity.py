"""Weights of timm's CrossViT, in timm's layout and in the authors' release layout, give the
same logits through our model (fp32, eval mode); in bf16 (autocast, and converted weights on a
simulated generic CPU) the logits stay within bf16's tolerance of timm's fp32 ones."""

import copy

import pytest
import torch
from safetensors.torch import save_file

import crossvit
from conftest import simulated_cpu

timm = pytest.importorskip("timm")

PUBLISHED = [n for n in crossvit.list_models() if "micro" not in n]


def _randomised_timm(name: str) -> torch.nn.Module:
    """timm's model with every tensor (biases and norms too) perturbed, so no layer hides."""
    torch.manual_seed(hash(name) % 1000)
    model = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def _official_layout(state: dict) -> dict:
    # The authors' release keeps the embeddings in ParameterLists: pos_embed.0, cls_token.1, ...
    return {k.replace("pos_embed_", "pos_embed.").replace("cls_token_", "cls_token."): v for k, v in state.items()}


def test_published_variant_list_matches_timm():
    assert len(PUBLISHED) == 11
    assert set(PUBLISHED) <= set(timm.list_models("crossvit_*"))


@pytest.mark.parametrize("name", PUBLISHED)
def test_timm_and_official_weights_give_timms_logits(name, tmp_path, monkeypatch):
    reference = _randomised_timm(name)
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    size = crossvit.get_variant(name).meta.input_size[-1]
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = reference(x)
    del reference

    timm_file = tmp_path / f"{name}.safetensors"
    save_file(state, timm_file)
    official_file = tmp_path / f"{crossvit.get_variant(name).meta.official_name}.pth"
    torch.save(_official_layout(state), official_file)
    del state

    for path in (timm_file, official_file):
        model = crossvit.create_model(name, checkpoint=path).eval()
        with torch.no_grad():
            got = model(x)
        assert got.shape == expected.shape
        diff = (got - expected).abs().max().item()
        assert diff < 1e-4, f"{path.name}: max |ours - timm| = {diff:.2e}"
        path.unlink()
    _check_bf16_inference(model, x[:1], expected[:1], monkeypatch)


def _check_bf16_inference(model, x, expected, monkeypatch):
    """bf16 runs on this CPU under autocast, and converted to bf16 on a CPU without bf16 or
    oneDNN (where no fast path may run); both within a few bf16 steps of fp32."""
    tolerance = 0.05 * expected.abs().max().item()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = model(x).float()
    converted = copy.deepcopy(model).to(torch.bfloat16)
    with torch.inference_mode(), simulated_cpu(monkeypatch, "generic"):
        plain = converted(x.to(torch.bfloat16)).float()
    for how, got in (("autocast", autocast), ("converted", plain)):
        assert (got - expected).abs().max().item() < tolerance, how


def test_authors_names_resolve_to_the_same_model():
    a = crossvit.create_model("crossvit_15_dagger_384")
    assert a.config == crossvit.get_variant("crossvit_15_dagger_408").config
    assert a.meta.name == "crossvit_15_dagger_408"
