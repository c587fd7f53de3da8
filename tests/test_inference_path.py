"""The fast CPU inference paths (model/fastpaths: oneDNN linear with bias and GELU inside,
attention in blocks) give the outputs of the plain PyTorch path, ask this CPU before they run,
and step aside wherever they must: gradients, tracing, other modules. Every test runs on this
CPU and again as on a generic one (the cpu_mode fixture)."""

import contextlib

import pytest
import torch
from torch import nn

import crossvit
from conftest import perturbed_micro_model, simulated_cpu
from crossvit.model import layers
from crossvit.model.fastpaths import attention, cpu_support
from crossvit.model.fusion import CrossAttention
from crossvit.analysis.flops import count_macs

pytestmark = pytest.mark.usefixtures("cpu_mode")


@pytest.fixture
def plain_path(monkeypatch):
    """Switch every fast path off (a generic CPU), to get the reference outputs."""
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(simulated_cpu(monkeypatch, "generic"))


@pytest.mark.parametrize("fusion", ["cross_attention", "all_attention", "pairwise"])
def test_fused_path_equals_plain_path_in_fp32(fusion, plain_path):
    model = perturbed_micro_model(fusion=fusion)
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        fused = model(x)
    plain_path()
    with torch.inference_mode():
        plain = model(x)
    assert (fused - plain).abs().max().item() < 1e-5


def test_fused_path_under_bf16_autocast_stays_close_to_fp32(plain_path):
    model = perturbed_micro_model()
    model.bf16_twin_enabled = False  # the autocast path itself (the twin has its own tests)
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        fused = model(x).float()
    plain_path()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = model(x).float()
    with torch.inference_mode():
        reference = model(x)
    scale = reference.abs().max().item()
    # bf16 keeps 8 bits of mantissa: both paths sit within a few bf16 steps of fp32.
    assert (fused - reference).abs().max().item() < 0.05 * scale
    assert (fused - reference).abs().max().item() < 2 * (plain - reference).abs().max().item() + 1e-3 * scale


def test_fused_kernel_is_what_runs(plain_path):
    model = perturbed_micro_model(dim=(128, 256), img_size=256)
    x = torch.randn(2, 3, 256, 256)  # the small branch sees 2 x 4097 rows: past the AVX-512 fp32 limit
    calls = []  # (rows, in_features) of every F.linear
    support = cpu_support()

    class Spy(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.nn.functional.linear:
                calls.append((args[0].numel() // args[0].shape[-1], args[0].shape[-1]))
            return func(*args, **(kwargs or {}))

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    folded = sum(isinstance(m, CrossAttention) for m in model.modules())
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16), Spy():
        model(x)
    if support.onednn_bf16:
        assert calls == []  # in bf16 every Linear goes through the fused kernel
    else:  # bf16 where oneDNN cannot: every Linear through F.linear, under autocast
        assert len(calls) == len(linears) - 2 * folded
    calls.clear()
    with torch.inference_mode(), Spy():
        model(x)
    fused_fp32 = [(r, f) for r, f in calls if support.onednn_linear and support.fp32_linear_pays(f, r)]
    assert fused_fp32 == []  # in fp32 only where it does not pay
    if support.onednn_linear and support.isa.startswith("AVX512"):
        assert calls and all(rows > 4096 and features < 256 for rows, features in calls)
    calls.clear()
    plain_path()
    with torch.inference_mode(), Spy():
        model(x)
    # every Linear but the keys and values of cross-attention, whose weights the folded form reads itself
    assert len(calls) == len(linears) - 2 * folded


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gradients_equal_plain_path(precision, plain_path):
    model = perturbed_micro_model(drop_path_rate=0.0).train()
    x = torch.randn(2, 3, 32, 32)

    def gradients():
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x)
        out.float().square().sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    fused = gradients()
    plain_path()
    plain = gradients()
    for (name, _), a, b in zip(model.named_parameters(), fused, plain):
        assert torch.equal(a, b), name  # training never takes the fused kernel


def test_mac_count_is_the_same_with_and_without_the_fused_kernel(plain_path):
    model = perturbed_micro_model()
    x = torch.zeros(1, 3, 32, 32)
    fused = count_macs(model, x)
    plain_path()
    assert count_macs(model, x) == fused


def test_a_replaced_linear_is_called_as_it_is():
    model = perturbed_micro_model()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        before = model(x)
    block = model.encoders[0].branches[0][0]

    class Doubled(nn.Module):  # stands in for a quantized or otherwise swapped layer
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, t):
            return 2 * self.inner(t)

    block.mlp.fc2 = Doubled(block.mlp.fc2)
    with torch.inference_mode():
        after = model(x)
    assert not torch.allclose(before, after)


def test_packed_bf16_weights_follow_weight_updates(plain_path):
    model = perturbed_micro_model()
    x = torch.randn(2, 3, 32, 32)

    def bf16_logits():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x).float()

    first = bf16_logits()
    other = perturbed_micro_model()
    other.load_state_dict({k: v + 0.1 * torch.randn_like(v) for k, v in model.state_dict().items()})
    model.load_state_dict(other.state_dict())  # copies in place: the packed copies must notice
    updated = bf16_logits()
    plain_path()
    expected = bf16_logits()
    assert not torch.allclose(first, updated)
    assert (updated - expected).abs().max().item() < 0.05 * expected.abs().max().item()


def test_a_model_that_has_run_inference_can_still_be_copied(plain_path):
    import copy
    import pickle

    model = perturbed_micro_model(dim=(128, 256))
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)  # leaves oneDNN copies of the weights on the layers
    with torch.inference_mode():
        expected = model(x)
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):  # as EMA and quantization copy
        with torch.inference_mode():
            assert torch.equal(twin(x), expected)


def test_inference_after_a_fused_optimizer_step_sees_the_new_weights(plain_path):
    """A fused AdamW step changes the weights without bumping their version counter: the packed
    copies made before it must not survive the switch back to eval (the trainer's pattern)."""
    model = perturbed_micro_model(dim=(128, 256))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = model(x)  # fills the cache
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    model.train()
    model(x).logsumexp(1).sum().backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        after = model(x)
        plain_path()
        expected = model(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-5)


def _attention_reference(q, k, v, mask_self):
    logits = q.double() @ k.double().transpose(-2, -1) * q.shape[-1] ** -0.5
    if mask_self:
        logits = logits.masked_fill(torch.eye(q.shape[-2], k.shape[-2], dtype=torch.bool), float("-inf"))
    return logits.softmax(-1) @ v.double()


@pytest.mark.parametrize("mask_self", [False, True])
@pytest.mark.parametrize("block_bytes", [1, 3 * 2 * 7 * 7 * 4, 1 << 30])  # 5 images as 5 x 1, 3 + 2, 5
def test_attention_in_blocks_equals_the_formula(mask_self, block_bytes, monkeypatch):
    monkeypatch.setattr(attention, "_LOGITS_BLOCK_BYTES", block_bytes)
    q, k, v = torch.randn(5, 7, 3, 2, 4).permute(2, 0, 3, 1, 4)  # strided, as the qkv projection leaves them
    self_mask = torch.eye(7, dtype=torch.bool) if mask_self else None
    with torch.inference_mode():
        out = attention._attend_in_blocks(q, k, v, 4 ** -0.5, self_mask)
        merged = layers.merge_heads(out)
    torch.testing.assert_close(out.double(), _attention_reference(q, k, v, mask_self), atol=1e-6, rtol=1e-6)
    assert merged.data_ptr() == out.data_ptr()  # the heads come out merged: no copy after


def test_blocks_run_for_large_bf16_inference_batches_only(monkeypatch):
    calls = []
    blocked = attention._attend_in_blocks
    monkeypatch.setattr(attention, "_attend_in_blocks", lambda *args: calls.append(args[0].shape[0]) or blocked(*args))
    monkeypatch.setattr(attention, "_LOGITS_BLOCK_BYTES", 4 * 50 * 50 * 2 * 3)  # 3 images' small-branch logits
    model = perturbed_micro_model()
    bf16 = cpu_support().onednn_bf16  # measured where oneDNN computes bf16; elsewhere never
    for batch, precision, grad, expected in [(8, torch.bfloat16, False, bf16), (2, torch.bfloat16, False, False),
                                             (8, torch.float32, False, False), (8, torch.bfloat16, True, False)]:
        calls.clear()
        with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == torch.bfloat16):
            model(torch.randn(batch, 3, 32, 32, requires_grad=grad))
        assert bool(calls) == expected, (batch, precision, grad)


def test_bf16_outputs_do_not_depend_on_the_attention_blocks(monkeypatch):
    model = perturbed_micro_model(locality_attention=True)
    x = torch.randn(5, 3, 32, 32)
    outputs = []
    for block_bytes in (1, 1 << 30):  # blocks of one image; a budget the batch never exceeds: no blocks
        monkeypatch.setattr(attention, "_LOGITS_BLOCK_BYTES", block_bytes)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            outputs.append(model(x).float())
    with torch.inference_mode():
        reference = model(x)
    scale = reference.abs().max().item()
    assert (outputs[0] - outputs[1]).abs().max().item() < 0.02 * scale
    assert (outputs[0] - reference).abs().max().item() < 0.05 * scale


def test_a_model_built_under_inference_mode_runs():
    """Its weights are inference tensors, which have no version counter for the weight cache."""
    with torch.inference_mode():
        model = crossvit.create_model("crossvit_micro_32").eval()
        x = torch.randn(2, 3, 32, 32)
        for precision in (torch.float32, torch.bfloat16):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == torch.bfloat16):
                assert torch.isfinite(model(x)).all()


def test_bf16_attention_takes_the_flash_kernel_where_bf16_is_emulated(monkeypatch):
    """The explicit bf16 matmuls were measured to pay only where oneDNN computes bf16; with bf16
    emulated (AVX2) they cost 4-5x the flash kernel."""
    q, k, v = (torch.randn(2, 4, 50, 16, dtype=torch.bfloat16) for _ in range(3))
    kernels = []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **kw: kernels.append("flash") or real_sdpa(*a, **kw))
    with torch.no_grad():
        attention.attend(q, k, v)
    assert kernels == ([] if cpu_support().onednn_bf16 else ["flash"])
    with simulated_cpu(monkeypatch, "avx2"), torch.no_grad():
        out, _ = attention.attend(q, k, v)
    assert kernels[-1:] == ["flash"]
    reference = (q.float() @ k.float().transpose(-2, -1) / 4).softmax(-1) @ v.float()
    torch.testing.assert_close(out.float(), reference, atol=0.03, rtol=0.03)
