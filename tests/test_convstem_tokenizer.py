"""The convolutional-stem tokenizer ('convstem', Xiao et al. 2021): grids, structure, receptive
field, parameter and MAC counts, errors."""

import pytest
import torch
import torch.nn.functional as F

import crossvit
from crossvit.model.config import BranchConfig
from crossvit.model.layers import Tokenizer
from crossvit.analysis.flops import count_macs, count_params

from conftest import small_config


@pytest.mark.parametrize("patch, size", [(2, 28), (4, 28), (4, 32), (8, 32), (16, 224), (16, 240)])
def test_token_grid_is_image_size_over_patch(patch, size):
    tokenizer = Tokenizer("convstem", patch, 3, 64).eval()
    with torch.no_grad():
        tokens = tokenizer(torch.zeros(1, 3, size, size))
    grid = size // patch
    assert tokens.shape == (1, grid * grid, 64)
    assert BranchConfig(patch, size, 64, 1, 1, tokenizer="convstem").grid_size() == grid


def test_stem_matches_a_hand_computation():
    """Patch 4, width 16: conv 3x3/2 to 8 channels, BN, ReLU, conv 3x3/2 to 16, BN, ReLU, conv 1x1."""
    torch.manual_seed(0)
    tokenizer = Tokenizer("convstem", 4, 1, 16)
    stem = tokenizer.proj
    with torch.no_grad():
        for bn in (stem[1], stem[4]):  # non-trivial running statistics
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    stem.eval()
    x = torch.randn(2, 1, 28, 28)

    def bn(y, layer):
        return (y - layer.running_mean[:, None, None]) / (layer.running_var[:, None, None] + layer.eps).sqrt() \
            * layer.weight[:, None, None] + layer.bias[:, None, None]

    y = F.relu(bn(F.conv2d(x, stem[0].weight, stride=2, padding=1), stem[1]))
    assert y.shape == (2, 8, 14, 14)
    y = F.relu(bn(F.conv2d(y, stem[3].weight, stride=2, padding=1), stem[4]))
    expected = F.conv2d(y, stem[6].weight, stem[6].bias).flatten(2).transpose(1, 2)
    with torch.no_grad():
        torch.testing.assert_close(tokenizer(x), expected)


def test_a_token_sees_its_neighbours_pixels_unlike_a_linear_patch():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 28, 28)
    poked = x.clone()
    poked[0, 0, 3, 3] += 5.0  # the last pixel of patch (0, 0), next to patch (1, 1)
    for kind, changes in (("linear", False), ("convstem", True)):
        tokenizer = Tokenizer(kind, 4, 1, 16).eval()
        with torch.no_grad():
            delta = (tokenizer(poked) - tokenizer(x)).abs().sum(-1)[0]
        assert delta[0] > 0
        assert bool(delta[1 * 7 + 1] > 0) == changes


def test_parameters_and_macs_match_the_layer_shapes():
    tokenizer = Tokenizer("convstem", 4, 1, 64)
    # 3x3 convs without bias 1 -> 32 -> 64, two BatchNorms (weight, bias), 1x1 conv 64 -> 64 with bias
    assert count_params(tokenizer) == 9 * 32 + 9 * 32 * 64 + 2 * 32 + 2 * 64 + 64 * 64 + 64
    macs = count_macs(tokenizer.eval(), torch.zeros(1, 1, 28, 28))
    assert macs >= 14 * 14 * 9 * 32 + 7 * 7 * 9 * 32 * 64 + 7 * 7 * 64 * 64


def test_model_with_convstem_trains_end_to_end():
    torch.manual_seed(0)
    model = crossvit.create_model("crossvit_micro_28", tokenizer=("convstem", "linear"))
    assert model.grids == [7, 2]
    out = model(torch.randn(4, 1, 28, 28))
    out.logsumexp(-1).sum().backward()
    for name, p in model.tokenizers[0].named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("patch", [1, 3, 12])
def test_unsupported_patch_size_is_a_one_line_error(patch):
    with pytest.raises(crossvit.CrossViTError) as info:
        small_config(tokenizer="convstem", patch_size=(patch, 8))
    message = str(info.value)
    assert "\n" not in message and f"power-of-two patch size (2, 4, 8, 16...), not {patch}" in message
