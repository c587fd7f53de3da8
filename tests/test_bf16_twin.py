"""bf16-autocast inference runs a bf16 copy of the model (model/fastpaths/twin.py): it computes
what a bf16-converted model computes, stays as close to fp32 as autocast does (timm's model
under autocast is the reference), follows every change of the weights, and steps aside
wherever it must (training, gradients, attention maps, fp16, foreign modules, a CPU whose
oneDNN has no bf16). Every test runs on this CPU and again as on a generic one."""

import copy
import pickle

import pytest
import torch

from conftest import perturbed_micro_model
from crossvit.model.fastpaths import bf16_twin, cpu_support
from crossvit.analysis.benchmark import build_contenders

pytestmark = pytest.mark.usefixtures("cpu_mode")

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.fixture
def cpu_twin():
    """The twin's own tests on the CPU need a CPU where it runs: one whose oneDNN computes bf16."""
    if not cpu_support().onednn_bf16:
        pytest.skip(f"no bf16 twin on this CPU ({cpu_support().describe()}); test_no_twin_where_onednn_has_no_bf16")


def test_no_twin_where_onednn_has_no_bf16(monkeypatch):
    from conftest import simulated_cpu

    model = perturbed_micro_model()
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        reference = model(x)
    for profile in ("avx2", "generic"):
        with simulated_cpu(monkeypatch, profile):
            assert bf16_twin_of(model, x) is None  # autocast runs the model itself
            out = _bf16_inference(model, x)
            assert out.dtype == torch.bfloat16
            assert (out.float() - reference).abs().max() < 0.05 * reference.abs().max()


def _bf16_inference(model, x):
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16):
        return model(x)


@pytest.mark.parametrize("device", DEVICES)
def test_twin_computes_what_a_bf16_converted_model_computes(device):
    if device == "cpu" and not cpu_support().onednn_bf16:
        pytest.skip("no bf16 twin on this CPU")
    model = perturbed_micro_model().to(device)
    x = torch.randn(3, 3, 32, 32, device=device)
    converted = copy.deepcopy(model).to(torch.bfloat16)
    converted.bf16_twin_enabled = False
    with torch.inference_mode():
        expected = converted(x.to(torch.bfloat16))
    out = _bf16_inference(model, x)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, expected)
    assert bf16_twin(model, x) is None  # outside autocast and inference: the model itself runs


@pytest.mark.parametrize("device", DEVICES)
def test_twin_stays_as_close_to_fp32_as_timms_model_under_autocast(device):
    pytest.importorskip("timm")
    ours, theirs = (c.model for c in build_contenders("crossvit_tiny_240", True, None, torch.device(device)))
    x = torch.randn(2, 3, 240, 240, device=device)
    with torch.inference_mode():
        reference = ours(x)
    twin_error = (_bf16_inference(ours, x).float() - reference).abs().max().item()
    timm_error = (_bf16_inference(theirs, x).float() - reference).abs().max().item()
    # a bf16 residual stream costs a little: measured 1.0-1.4x autocast's error across variants
    assert twin_error < 2.5 * timm_error
    assert twin_error < 0.05 * reference.abs().max().item()


def test_twin_follows_the_weights(cpu_twin):
    model = perturbed_micro_model()
    x = torch.randn(2, 3, 32, 32)
    before = _bf16_inference(model, x)
    first_twin = bf16_twin_of(model, x)
    with torch.no_grad():  # an in-place update (an EMA step, say)
        model.heads[0].weight.mul_(3)
    after_update = _bf16_inference(model, x)
    assert not torch.equal(before, after_update)
    assert bf16_twin_of(model, x) is not first_twin

    other = perturbed_micro_model(drop_rate=0.0)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1e-2)
    model.load_state_dict(other.state_dict())
    fresh = copy.deepcopy(model)  # deep copies start without a twin
    assert torch.equal(_bf16_inference(model, x), _bf16_inference(fresh, x))

    model.reset_classifier(5)
    model.eval()
    assert _bf16_inference(model, x).shape == (2, 5)


def bf16_twin_of(model, x):
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        return bf16_twin(model, x)


def test_twin_steps_aside_where_it_must(cpu_twin):
    model = perturbed_micro_model()
    x = torch.randn(2, 3, 32, 32)
    assert bf16_twin_of(model, x) is not None
    model.train()
    assert bf16_twin_of(model, x) is None
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # gradients wanted
        assert bf16_twin(model, x) is None
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.float16):
        assert bf16_twin(model, x) is None
    model.keep_attention(True)
    assert bf16_twin_of(model, x) is None
    _bf16_inference(model, x)
    assert model.encoders[0].fusion.attend[0][0].attention is not None  # the maps land on the model itself
    model.keep_attention(False)
    model.bf16_twin_enabled = False
    assert bf16_twin_of(model, x) is None


def test_int8_model_keeps_its_own_layers():
    from crossvit.deploy.quantize import quantize_model

    quantized = quantize_model(perturbed_micro_model())
    assert bf16_twin_of(quantized, torch.randn(1, 3, 32, 32)) is None


def test_twin_is_never_saved_copied_or_trained(cpu_twin):
    model = perturbed_micro_model()
    keys = set(model.state_dict())
    twin = bf16_twin_of(model, torch.randn(1, 3, 32, 32))
    assert set(model.state_dict()) == keys
    assert all(not p.requires_grad and p.dtype == torch.bfloat16 for p in twin.parameters())
    assert all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters())
    for copied in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert copied.__dict__["_bf16_twin"].module is None
