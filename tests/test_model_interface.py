"""The timm-style interface: features, heads, classifier reset, weight-decay names, input checks."""

import pytest
import torch

import crossvit

from conftest import small_config


def test_forward_features_are_per_branch_token_tensors(small_model):
    feats = small_model.forward_features(torch.randn(2, 3, 32, 32))
    assert [tuple(f.shape) for f in feats] == [(2, 1 + 64, 32), (2, 1 + 16, 64)]


def test_forward_head_averages_the_branch_heads(small_model):
    small_model.eval()
    feats = small_model.forward_features(torch.randn(3, 3, 32, 32))
    per_branch = small_model.branch_logits(feats)
    assert len(per_branch) == 2
    torch.testing.assert_close(small_model.forward_head(feats), (per_branch[0] + per_branch[1]) / 2)
    pooled = small_model.forward_head(feats, pre_logits=True)
    assert pooled.shape == (3, small_model.num_features) == (3, 32 + 64)
    torch.testing.assert_close(pooled[:, :32], feats[0][:, 0])


def test_reset_classifier_keeps_device_and_dtype():
    model = small_config().to(torch.bfloat16)
    model.reset_classifier(5)
    assert model.num_classes == 5
    assert all(h.weight.dtype == torch.bfloat16 and h.out_features == 5 for h in model.heads)
    assert model(torch.randn(2, 3, 32, 32, dtype=torch.bfloat16)).shape == (2, 5)
    model.reset_classifier(0)
    assert model(torch.randn(2, 3, 32, 32, dtype=torch.bfloat16)).shape == (2, model.num_features)


def test_no_weight_decay_names_the_tokens_and_embeddings(small_model):
    names = small_model.no_weight_decay()
    assert names == {"cls_tokens.0", "cls_tokens.1", "pos_embeds.0", "pos_embeds.1"}
    assert names <= dict(small_model.named_parameters()).keys()


def test_initialisation_follows_the_release():
    model = crossvit.create_model("crossvit_9_240")
    assert model.norms[0].eps == 1e-6
    linear = model.encoders[0].branches[1][0].mlp.fc1
    assert linear.bias.abs().max() == 0 and 0.015 < linear.weight.std() < 0.025
    assert linear.weight.abs().max() <= 2.0  # truncated normal
    assert 0.015 < model.pos_embeds[1].std() < 0.025


def test_large_branch_sees_a_bicubic_resize():
    """The L-branch tokenizes the 240 px input resized to 224, not cropped."""
    model = crossvit.create_model("crossvit_9_240").eval()
    x = torch.randn(1, 3, 240, 240)
    seen = {}

    def keep_input(module, args, out):
        seen["input"] = args[0]
    model.tokenizers[1].register_forward_hook(keep_input)
    model(x)
    expected = torch.nn.functional.interpolate(x, size=(224, 224), mode="bicubic", align_corners=False)
    torch.testing.assert_close(seen["input"], expected)


@pytest.mark.parametrize("shape", [(2, 3, 28, 28), (2, 1, 32, 32), (3, 32, 32)])
def test_wrong_input_shape_is_a_clear_error(small_model, shape):
    with pytest.raises(crossvit.CrossViTError, match=r"takes images of shape \(batch, 3, 32, 32\)"):
        small_model(torch.randn(*shape))


def test_img_size_override_scales_every_branch():
    model = crossvit.create_model("crossvit_15_dagger_240", img_size=408)
    assert [b.img_size for b in model.config.branches] == [408, 384]
    assert model.config == crossvit.get_variant("crossvit_15_dagger_408").config
    assert model.meta.input_size == (3, 408, 408)


def test_bad_options_are_clear_errors():
    with pytest.raises(crossvit.CrossViTError, match="unknown model option.*'depht'"):
        crossvit.create_model("crossvit_9_240", depht=3)
    with pytest.raises(crossvit.CrossViTError, match="unknown fusion 'cross'.*cross_attention"):
        crossvit.create_model("crossvit_9_240", fusion="cross")
    with pytest.raises(crossvit.CrossViTError, match="not divisible by num_heads"):
        crossvit.create_model("crossvit_9_240", num_heads=5)
    with pytest.raises(crossvit.CrossViTError, match="conv3.*patch sizes 4, 8, 12 and 16"):
        crossvit.create_model("crossvit_9_240", tokenizer="conv3", patch_size=(10, 16))


def test_model_exports_with_torch_export(small_model):
    small_model.eval()
    x = torch.randn(2, 3, 32, 32)
    program = torch.export.export(small_model, (x,))
    torch.testing.assert_close(program.module()(x), small_model(x))


def test_the_model_package_needs_only_torch_and_safetensors():
    import subprocess
    import sys

    code = ("import sys, crossvit; m = crossvit.create_model('crossvit_micro_28'); "
            "print(sorted({n.split('.')[0] for n in sys.modules} & {'timm', 'torchvision', 'PIL'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_shifted_tokenizer_cuts_the_image_and_four_half_patch_shifts():
    """Shifted patch tokens, checked against a per-pixel construction: token (i, j) holds its own
    patch and the patches that sit half a patch away diagonally (zeros beyond the border)."""
    torch.manual_seed(0)
    model = small_config(tokenizer=("shifted", "linear"), img_size=16, patch_size=(4, 8))
    tokenizer = model.tokenizers[0].proj
    x = torch.randn(2, 3, 16, 16)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))

    def patch(i, j, dy, dx):  # the p x p window whose corner is at (4i + dy, 4j + dx), zero outside
        return padded[:, :, 2 + 4 * i + dy:6 + 4 * i + dy, 2 + 4 * j + dx:6 + 4 * j + dx].reshape(2, 3, 16)

    rows = []
    for i in range(4):
        for j in range(4):
            views = [patch(i, j, 0, 0)] + [patch(i, j, dy, dx) for dy, dx in ((-2, -2), (-2, 2), (2, -2), (2, 2))]
            rows.append(torch.stack(views, 1).reshape(2, -1))  # channel-major, like unfold
    expected = tokenizer.linear(tokenizer.norm(torch.stack(rows, 1)))
    torch.testing.assert_close(tokenizer(x), expected)
    assert model.forward_features(torch.randn(2, 3, 16, 16))[0].shape == (2, 1 + 16, 32)


def test_unknown_tokenizer_names_the_choices():
    with pytest.raises(crossvit.CrossViTError, match="unknown tokenizer 'conv9'.*linear, conv3, shifted"):
        small_config(tokenizer="conv9")


def test_locality_attention_never_attends_to_self_and_learns_its_temperature():
    torch.manual_seed(0)
    model = small_config(locality_attention=True)
    model.keep_attention(True)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    attn = model.encoders[0].branches[0][0].attn
    weights = attn.attention  # (B, heads, N, N)
    assert weights.diagonal(dim1=-2, dim2=-1).abs().max() == 0
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    assert attn.scale.grad is not None and attn.scale.grad.abs() > 0
    assert "encoders.0.branches.0.0.attn.scale" not in small_config().state_dict()  # off by default


def test_self_masked_attention_kernels_agree():
    """The fused kernel (long sequences) and the explicit matmuls (short ones) mask alike."""
    from crossvit.model.fastpaths import attend

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 80, 16) for _ in range(3))
    fused, _ = attend(q, k, v, scale=0.3, mask_self=True)  # 80 keys: the SDPA kernel
    logits = (q * 0.3 @ k.transpose(-2, -1)).masked_fill(torch.eye(80, dtype=torch.bool), float("-inf"))
    torch.testing.assert_close(fused, logits.softmax(-1) @ v)
    short, _ = attend(q[:, :, :10], k[:, :, :10], v[:, :, :10], scale=0.3, mask_self=True)  # explicit
    torch.testing.assert_close(short, logits[..., :10, :10].softmax(-1) @ v[:, :, :10])
