"""Published metadata checked against the real model (params, GMACs): the registry's copy of the
published numbers, in the repository, so that these run on any fresh clone; and that copy against
the project's facts file where it lies beside the checkout."""

import pytest
import torch

import crossvit
from crossvit.analysis.flops import count_macs, count_params, model_macs
from crossvit.analysis.models_table import describe

from conftest import facts_table

PUBLISHED = [n for n in crossvit.list_models() if "micro" not in n]


@pytest.mark.parametrize("name", PUBLISHED)
def test_params_and_gmacs_match_the_published_numbers(name):
    """Exact parameters of the released weights; GMACs within 0.2% of the reference measurement
    (docs/models.md says so) and within the rounding of the paper's GFLOPs (one decimal)."""
    meta = crossvit.get_variant(name).meta
    row = describe(name)  # counted on the real network, on the meta device
    assert row["params"] == meta.params
    assert abs(row["gmacs"] / meta.gmacs - 1) < 0.002, f"{name}: {row['gmacs']} GMACs vs {meta.gmacs}"
    assert abs(row["gmacs"] - meta.paper_gflops) <= 0.05, f"{name}: {row['gmacs']} GMACs vs the paper's {meta.paper_gflops}"


@pytest.mark.parametrize("name", PUBLISHED)
def test_the_registry_copies_the_facts_file(name):
    params, gmacs = facts_table()[name]  # skips where the facts file is not beside the checkout
    meta = crossvit.get_variant(name).meta
    assert (meta.params, meta.gmacs) == (params, gmacs)


def test_mac_count_includes_attention_matmuls():
    # One attention over N tokens of width C costs 2 * N^2 * C MACs (scores and weighted sum).
    class OneAttention(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.scaled_dot_product_attention(x, x, x)

    x = torch.zeros(1, 4, 50, 16)
    assert count_macs(OneAttention(), x) == 2 * 4 * 50 * 50 * 16


def test_counting_on_meta_device_equals_counting_real_weights():
    real = crossvit.create_model("crossvit_9_240").eval()
    macs = count_macs(real, torch.zeros(1, 3, 240, 240))
    assert abs(macs / 1e9 - describe("crossvit_9_240")["gmacs"]) < 1e-3
    assert count_params(real) == describe("crossvit_9_240")["params"]


def test_model_macs_counts_on_the_models_own_device():
    # `crossvit bench --device cuda` once fed CPU zeros to a CUDA model; meta stands in for CUDA here
    model = crossvit.create_model("crossvit_tiny_240")
    on_cpu = model_macs(model)
    assert model_macs(model.to("meta")) == on_cpu


def test_every_variant_has_preprocessing_metadata():
    for name in crossvit.list_models():
        meta = crossvit.get_variant(name).meta
        config = crossvit.get_variant(name).config
        assert meta.input_size == (config.in_chans, config.img_size, config.img_size)
        assert len(meta.mean) == len(meta.std) == config.in_chans
        assert 0 < meta.crop_pct <= 1 and meta.interpolation in ("bicubic", "bilinear")


def test_published_variants_carry_the_papers_numbers_and_urls():
    meta = crossvit.get_variant("crossvit_18_dagger_408").meta
    assert (meta.paper_params_m, meta.paper_gflops, meta.paper_top1) == (44.6, 32.4, 83.9)
    assert meta.urls == [
        "https://github.com/IBM/CrossViT/releases/download/weights-0.1/crossvit_18_dagger_384.pth",
        "https://huggingface.co/timm/crossvit_18_dagger_408.in1k/resolve/main/model.safetensors",
    ]
    assert crossvit.get_variant("crossvit_9_240").meta.crop_pct == 0.875


def test_list_models_filters_and_keeps_the_papers_order():
    assert crossvit.list_models("crossvit_18*") == [
        "crossvit_18_240", "crossvit_18_dagger_240", "crossvit_18_dagger_408"]
    assert crossvit.list_models()[0] == "crossvit_tiny_240"
    assert crossvit.list_models("nothing*") == []


def test_unknown_model_name_suggests_near_names():
    with pytest.raises(crossvit.CrossViTError, match="did you mean.*crossvit_9_240"):
        crossvit.create_model("crossvit_9_204")
