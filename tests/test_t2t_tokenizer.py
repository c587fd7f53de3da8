"""The Tokens-to-Token tokenizer ('t2t'): grids, structure, gradients, parameter and MAC counts."""

import math

import pytest
import torch
import torch.nn.functional as F

import crossvit
from crossvit.model.config import BranchConfig
from crossvit.model.layers import TokensToToken
from crossvit.analysis.flops import count_macs, count_params, model_macs

from conftest import small_config

# (patch size, image sizes it is used with)
SIZES = [(16, 224), (16, 240), (12, 240), (12, 224), (8, 32), (8, 224), (4, 32), (4, 28), (14, 28)]


@pytest.mark.parametrize("patch, size", SIZES)
def test_token_grid_is_image_size_over_patch(patch, size):
    tokenizer = TokensToToken(patch, 3, 16)
    with torch.no_grad():
        tokens = tokenizer(torch.zeros(1, 3, size, size))
    grid = size // patch
    assert tokens.shape == (1, grid * grid, 16)
    assert math.prod(stride for _, stride, _ in tokenizer.layout) == patch
    assert BranchConfig(patch, size, 16, 1, 1, tokenizer="t2t").grid_size() == grid


def test_soft_splits_and_token_layers_match_a_hand_computation():
    """Two splits (patch 8): unfold 7x7/4, a token transformer whose attention shortcut is v,
    tokens back on their 8x8 map, unfold 3x3/2, project; written out with an explicit softmax."""
    torch.manual_seed(0)
    t2t = TokensToToken(8, 3, 16, t2t_dim=8).eval()
    x = torch.randn(2, 3, 32, 32)
    layer = t2t.layers[0]
    tokens = F.unfold(x, 7, padding=2, stride=4).transpose(1, 2)  # (2, 64, 147)
    q, k, v = layer.qkv(layer.norm1(tokens)).split(8, dim=-1)
    weights = (q @ k.transpose(1, 2) / 8 ** 0.5).softmax(-1)
    y = v + layer.proj(weights @ v)
    fc1 = layer.mlp.fc1  # applies the GELU itself
    y = y + layer.mlp.fc2(F.gelu(F.linear(layer.norm2(y), fc1.weight, fc1.bias)))
    image = y.transpose(1, 2).reshape(2, 8, 8, 8)  # row-major token order is the map's
    expected = t2t.project(F.unfold(image, 3, padding=1, stride=2).transpose(1, 2))
    with torch.no_grad():
        torch.testing.assert_close(t2t(x), expected)


def test_two_branch_model_with_t2t_trains_end_to_end():
    torch.manual_seed(0)
    model = crossvit.create_model("crossvit_micro_32", tokenizer=("t2t", "linear"), dim=(32, 64),
                                  depth=(1, 1), num_heads=(2, 2), mlp_ratio=2.0, num_encoders=1)
    assert model.grids == [8, 2]
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.logsumexp(-1).sum().backward()
    t2t = model.tokenizers[0].proj
    assert isinstance(t2t, TokensToToken) and len(t2t.layers) == 1
    for name, p in t2t.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("patch", [2, 10, 32])
def test_unsupported_patch_size_is_a_one_line_error(patch):
    with pytest.raises(crossvit.CrossViTError) as info:
        small_config(tokenizer="t2t", patch_size=(patch, 8))
    message = str(info.value)
    assert "\n" not in message
    assert f"'t2t' supports patch sizes 4, 8, 12, 14 and 16, not {patch}" in message


def _t2t_params(in_chans, dim, t, layout):
    """Parameters of a t2t tokenizer from its layer shapes: per token layer LN(w), qkv w -> 3t
    without bias, proj t -> t, LN(t), MLP t -> t -> t; then the Linear from the last split."""
    widths = [(in_chans if i == 0 else t) * k * k for i, (k, _, _) in enumerate(layout)]
    per_layer = [2 * w + w * 3 * t + (t * t + t) + 2 * t + 2 * (t * t + t) for w in widths[:-1]]
    return sum(per_layer) + widths[-1] * dim + dim


@pytest.mark.parametrize("patch, in_chans", [(16, 3), (12, 3), (4, 1)])
def test_parameter_count_matches_the_layer_shapes(patch, in_chans):
    from crossvit.model.config import t2t_layout

    expected = _t2t_params(in_chans, 96, 64, t2t_layout(patch))
    assert count_params(TokensToToken(patch, in_chans, 96)) == expected
    if patch == 16:  # written out: 41,126 + 124,352 for the layers, 576 * 96 + 96 for the Linear
        assert expected == 41_126 + 124_352 + 55_392


def test_mac_count_includes_the_t2t_attention():
    """Patch 4 on 32 px: a 3x3/2 split gives 256 tokens of width 27; the layer costs
    qkv 256*27*192, attention 2*256^2*64 (scores and weighted sum), proj 256*64*64 and MLP
    2*256*64*64; the second split leaves 64 tokens of width 576 for the Linear to 32."""
    n, t = 256, 64
    hand = n * 27 * 3 * t + 2 * n * n * t + n * t * t + 2 * n * t * t + 64 * 576 * 32
    assert hand == 14_041_088
    tokenizer = TokensToToken(4, 3, 32).eval()
    assert count_macs(tokenizer, torch.zeros(1, 3, 32, 32)) == hand
    # the meta device (the models table counts there) takes another attention kernel
    assert count_macs(tokenizer.to("meta"), torch.zeros(1, 3, 32, 32, device="meta")) == hand
    # In the whole model (model_macs, inference path) t2t costs hand minus the linear tokenizer's
    # 64 tokens * 48 pixel values * 32.
    t2t_model = small_config(tokenizer=("t2t", "linear"), depth=(1, 1), num_encoders=1)
    linear_model = small_config(depth=(1, 1), num_encoders=1)
    macs = model_macs(t2t_model)
    assert macs - model_macs(linear_model) == hand - 64 * 48 * 32


def test_t2t_tokenizer_exports_with_torch_export():
    """The tokenizer alone, with a dynamic batch like crossvit.deploy.export; the whole model with t2t
    exports too (to .pt2 and ONNX), which takes longer than this suite should."""
    torch.manual_seed(0)
    tokenizer = TokensToToken(8, 3, 16).eval()
    x = torch.randn(2, 3, 32, 32)
    program = torch.export.export(tokenizer, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    with torch.no_grad():
        for batch in (x, torch.randn(3, 3, 32, 32)):
            torch.testing.assert_close(program.module()(batch), tokenizer(batch))
