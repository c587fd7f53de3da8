"""Any input size: set_input_size and dynamic_img_size against models created at that size from
the same checkpoint, for every tokenizer and fusion that changes how sizes matter."""

import pytest
import torch

import crossvit

MICRO = [
    dict(),
    dict(tokenizer=("conv3", "conv3")),
    dict(tokenizer=("convstem", "linear")),
    dict(tokenizer=("shifted", "linear")),
    dict(tokenizer=("t2t", "t2t"), patch_size=(8, 16)),
    dict(fusion="pairwise"),
    dict(fusion="all_attention", cls_token=False),
]


def _saved(tmp_path, name, **options):
    torch.manual_seed(0)
    model = crossvit.create_model(name, **options).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path = tmp_path / "model.safetensors"
    crossvit.save_checkpoint(model, path)
    return path


@pytest.mark.parametrize("options", MICRO, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("size", [64, 16])  # up and down from 32
def test_a_resized_model_equals_one_created_at_that_size(options, size, tmp_path):
    if options.get("patch_size") == (8, 16) and size == 16:
        size = 48  # T2T with 16 px patches needs a multiple of 16
    path = _saved(tmp_path, "crossvit_micro_32", **options)
    created = crossvit.create_model("crossvit_micro_32", img_size=size, checkpoint=path, **options).eval()
    resized = crossvit.create_model("crossvit_micro_32", checkpoint=path, **options).eval()
    resized.set_input_size(size)
    dynamic = crossvit.create_model("crossvit_micro_32", checkpoint=path, dynamic_img_size=True, **options).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = created(x)
        torch.testing.assert_close(resized(x), expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(dynamic(x), expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(dynamic(torch.zeros(1, 3, 32, 32)).shape, (1, 10))  # its own size still runs
    assert resized.config == created.config and resized.grids == created.grids
    assert resized.meta.input_size == (3, size, size)


def test_a_published_variant_changes_size_both_ways(tmp_path):
    path = _saved(tmp_path, "crossvit_9_dagger_240")
    for size in (288, 192):  # each from the 240 px weights: resampling twice is not resampling once
        model = crossvit.create_model("crossvit_9_dagger_240", checkpoint=path).eval()
        model.set_input_size(size)
        created = crossvit.create_model("crossvit_9_dagger_240", img_size=size, checkpoint=path).eval()
        x = torch.randn(1, 3, size, size)
        with torch.no_grad():
            torch.testing.assert_close(model(x), created(x), rtol=0, atol=1e-5)
        assert [b.img_size for b in model.config.branches] == [b.img_size for b in created.config.branches]


def test_dynamic_sizes_train_and_their_features_follow(tmp_path):
    model = crossvit.create_model("crossvit_micro_32", dynamic_img_size=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for size in (32, 48):
        loss = model(torch.randn(2, 3, size, size)).logsumexp(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert model.pos_embeds[0].grad is not None
    with torch.no_grad():
        (maps,) = model.forward_intermediates(torch.randn(1, 3, 48, 48), indices=1, intermediates_only=True)
    assert [m.shape[-1] for m in maps] == [48 // 4, 48 // 16]


@pytest.mark.parametrize("shape, message", [
    ((1, 3, 36, 36), r"36 px images do not fit branch 1: its 36 px view is not a multiple of its 16 px patches"),
    ((1, 3, 32, 48), r"takes images of shape \(batch, 3, 32, 32\)"),
])
def test_sizes_that_do_not_fit_are_one_line(shape, message):
    model = crossvit.create_model("crossvit_micro_32", dynamic_img_size=True)
    with pytest.raises(crossvit.CrossViTError, match=message):
        model(torch.zeros(shape))


def test_a_fixed_size_model_says_how_to_take_other_sizes():
    model = crossvit.create_model("crossvit_micro_32")
    with pytest.raises(crossvit.CrossViTError, match=r"create the model with img_size=48 \(or dynamic_img_size=True\)"):
        model(torch.zeros(1, 3, 48, 48))


def test_export_says_what_it_cannot_carry(tmp_path):
    from crossvit.deploy.export import export

    model = crossvit.create_model("crossvit_micro_32", dynamic_img_size=True).eval()
    with pytest.warns(UserWarning, match=r"dynamic_img_size does not carry into the exported graph: it takes 32 px"):
        export(model, tmp_path / "m.pt2", "torch-export")
    two_inputs = crossvit.create_model("crossvit_micro_32", in_chans=(3, 1)).eval()
    with pytest.raises(crossvit.CrossViTError, match=r"one batch per branch \(\[3, 1\] channels\)"):
        export(two_inputs, tmp_path / "m2.onnx", "onnx")
