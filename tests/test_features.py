"""CrossViT as a backbone: forward_intermediates, prune_intermediate_layers, features_only."""

from collections import OrderedDict

import pytest
import torch

import crossvit
from crossvit.model.features import CrossViTFeatures

ALL = crossvit.list_models()


@pytest.mark.parametrize("name", ALL)
def test_intermediate_shapes_and_feature_info_of_every_variant(name):
    with torch.device("meta"):  # shapes only: no arithmetic
        model = crossvit.create_model(name)
        size, chans = model.config.img_size, model.config.in_chans
        outputs = model.forward_intermediates(torch.empty(2, chans, size, size), intermediates_only=True)
    assert len(outputs) == len(model.encoders) and len(model.feature_info) == len(outputs) * len(model.grids)
    info = iter(model.feature_info)
    for i, maps in enumerate(outputs):
        for b, (branch_map, grid, branch) in enumerate(zip(maps, model.grids, model.config.branches)):
            f = next(info)
            assert branch_map.shape == (2, branch.dim, grid, grid)
            assert (f["encoder"], f["branch"], f["num_chs"]) == (i, b, branch.dim)
            assert f["reduction"] == pytest.approx(size / grid)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return crossvit.create_model("crossvit_micro_32", dim=(32, 64), num_heads=(2, 2), depth=(1, 2),
                                 num_encoders=3).eval()


def test_the_last_index_equals_forward_features(model):
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model.forward_features(x)
        final, inter = model.forward_intermediates(x, norm=True, output_fmt="NLC", return_prefix_tokens=True)
    assert len(inter) == 3
    for b, (patches, cls) in enumerate(inter[-1]):
        torch.testing.assert_close(final[b], expected[b], rtol=0, atol=0)
        torch.testing.assert_close(patches, expected[b][:, 1:], rtol=0, atol=0)
        torch.testing.assert_close(cls, expected[b][:, 0], rtol=0, atol=0)
    with torch.no_grad():
        (maps,) = model.forward_intermediates(x, indices=[-1], norm=True, intermediates_only=True)
    grid = model.grids[0]
    torch.testing.assert_close(maps[0], expected[0][:, 1:].transpose(1, 2).reshape(3, -1, grid, grid))


def test_earlier_encoders_are_what_the_loop_computes(model):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        xs = model.embed(x)
        first = model.encoders[0](xs)
        (maps,) = model.forward_intermediates(x, indices=[0], output_fmt="NLC", intermediates_only=True)
    for b in range(2):
        torch.testing.assert_close(maps[b], first[b][:, 1:])


def test_without_cls_tokens_the_mean_token_stands_in():
    model = crossvit.create_model("crossvit_micro_32", cls_token=False).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        (pairs,) = model.forward_intermediates(x, indices=1, output_fmt="NLC", return_prefix_tokens=True,
                                               intermediates_only=True)
    for patches, cls in pairs:
        torch.testing.assert_close(cls, patches.mean(1))


@pytest.mark.parametrize("indices, message", [(5, "ask for 1 to 3"), ([3], "index 3 is out of range"),
                                               ([-4], "index -4 is out of range")])
def test_bad_indices_are_one_line(model, indices, message):
    with pytest.raises(crossvit.CrossViTError, match=message):
        model.forward_intermediates(torch.zeros(1, 3, 32, 32), indices=indices)


def test_pruning_keeps_what_the_indices_need(model):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    assert model.prune_intermediate_layers([0, 1]) == [0, 1]
    assert len(model.encoders) == 2 and model.num_classes == 0
    assert [f["encoder"] for f in model.feature_info] == [0, 0, 1, 1]
    with torch.no_grad():
        after = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    for a, b in zip(before, after):
        for ma, mb in zip(a, b):
            torch.testing.assert_close(ma, mb, rtol=0, atol=0)


def test_features_only_needs_features_only_for_out_indices():
    assert isinstance(crossvit.create_model("crossvit_micro_32", features_only=True), CrossViTFeatures)
    with pytest.raises(crossvit.CrossViTError, match="out_indices applies with features_only=True"):
        crossvit.create_model("crossvit_micro_32", out_indices=(0,))


def test_a_feature_pyramid_over_crossvit_15_trains(tmp_path):
    """torchvision's FPN over the branch maps of two encoders, a 1x1 segmentation head on the
    finest map, four steps on one random batch: the loss goes down."""
    from torchvision.ops import FeaturePyramidNetwork

    torch.manual_seed(0)
    backbone = crossvit.create_model("crossvit_15_240", features_only=True, out_indices=(1, 2))
    assert backbone.channels() == [192, 384, 192, 384] and len(backbone.model.encoders) == 3
    fpn = FeaturePyramidNetwork(backbone.channels(), out_channels=32)
    head = torch.nn.Conv2d(32, 5, 1)
    parts = torch.nn.ModuleList([backbone, fpn, head])
    optimizer = torch.optim.AdamW(parts.parameters(), lr=1e-4)
    x = torch.randn(2, 3, 240, 240)
    target = torch.randint(0, 5, (2, 20, 20))  # on the small-patch branch's 20 x 20 grid
    losses = []
    for _ in range(4):
        maps = backbone(x)
        pyramid = fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))
        loss = torch.nn.functional.cross_entropy(head(pyramid["0"]), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    assert all(p.grad is not None for p in backbone.parameters() if p.requires_grad)
