"""The fusion schemes as modules of their own, and attention weights kept with their graph."""

import pytest
import torch

import crossvit


@pytest.mark.parametrize("scheme", ["cross_attention", "all_attention", "class_token", "pairwise", "none"])
def test_each_scheme_fuses_token_sets_of_any_widths(scheme):
    torch.manual_seed(0)
    fusion = crossvit.fusion_module(scheme, dims=(48, 96, 32), num_heads=(2, 4, 2))
    counts = (1 + 16, 1 + 9, 1 + 4) if scheme == "pairwise" else (1 + 5, 1 + 12, 1 + 3)  # pairwise: square grids
    xs = [torch.randn(2, n, d, requires_grad=True) for n, d in zip(counts, (48, 96, 32))]
    outs = fusion(xs)
    assert [o.shape for o in outs] == [x.shape for x in xs]
    sum(o.sum() for o in outs).backward()
    assert all(x.grad is not None for x in xs)


def test_the_standalone_cross_attention_is_the_models_own():
    torch.manual_seed(0)
    model = crossvit.create_model("crossvit_micro_32", dim=(32, 64), num_heads=(2, 4)).eval()
    inside = model.encoders[0].fusion
    alone = crossvit.fusion_module("cross_attention", dims=(32, 64), num_heads=(2, 4)).eval()
    alone.load_state_dict(inside.state_dict())  # the same parameters, the same names
    xs = [torch.randn(2, 1 + 64, 32), torch.randn(2, 1 + 4, 64)]
    with torch.no_grad():
        for a, b in zip(alone(xs), inside(xs)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("bad, message", [(dict(scheme="sum"), "unknown fusion 'sum'"),
                                          (dict(dims=(32,), num_heads=(2,)), "two or more token sets")])
def test_bad_arguments_are_one_line(bad, message):
    args = dict(scheme="cross_attention", dims=(32, 64), num_heads=(2, 4)) | bad
    with pytest.raises(crossvit.CrossViTError, match=message):
        crossvit.fusion_module(**args)


def test_attention_kept_with_its_graph_trains_the_model():
    """A loss on the kept attention weights (attention supervision) reaches the input and the
    weights of the layers that made them; kept for maps (True), they carry no graph."""
    torch.manual_seed(0)
    model = crossvit.create_model("crossvit_micro_32").train()
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    model.keep_attention("graph")
    model(x)
    fusion_layer = model.encoders[-1].fusion.attend[0][0]
    block = model.encoders[0].branches[0][0].attn
    loss = fusion_layer.attention[..., 0].sum() + block.attention.diagonal(dim1=-2, dim2=-1).sum()
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert fusion_layer.q.weight.grad.abs().sum() > 0 and block.qkv.weight.grad.abs().sum() > 0
    model.keep_attention(True)
    model(x)
    assert not block.attention.requires_grad
    with pytest.raises(crossvit.CrossViTError, match="keep_attention takes True, False or 'graph'"):
        model.keep_attention("yes")
