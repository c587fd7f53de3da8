import contextlib
import os
import re
from pathlib import Path

import pytest
import torch

# Two cores: under pytest-xdist (make test runs two workers) each worker takes one.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)

# The spec lies in shared/ beside the checkout; CROSSVIT_FACTS may point elsewhere.
FACTS = Path(os.environ.get("CROSSVIT_FACTS",
                            Path(__file__).resolve().parents[2] / "shared" / "reference" / "crossvit-facts.md"))


def small_config(**overrides):
    """A two-branch CrossViT small enough for gradient tests (about 0.2M params)."""
    import crossvit

    base = dict(patch_size=(4, 8), img_size=32, dim=(32, 64), depth=(1, 2), num_heads=(2, 2),
                mlp_ratio=2.0, num_encoders=2, num_classes=7, in_chans=3)
    base.update(overrides)
    return crossvit.create_model("crossvit_micro_32", **base)


def perturbed_micro_model(**overrides):
    """crossvit_micro_32 in eval mode with every tensor nudged off its init, so that no bias
    or norm hides a difference between two paths."""
    import crossvit

    torch.manual_seed(0)
    model = crossvit.create_model("crossvit_micro_32", **overrides).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _onednn_op_as_on(profile: str, name: str):
    """oneDNN's operator `name` as the CPU `profile` has it: absent ('generic'), or without bf16
    ('avx2', whose oneDNN raises for bf16 as a Zen 3 does)."""
    real = getattr(torch.ops.mkldnn, name)

    def op(*args, **kwargs):
        if profile == "generic" or any(isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 for a in args):
            raise RuntimeError(f"mkldnn.{name}: not on the simulated {profile} CPU; a fast path skipped its check")
        return real(*args, **kwargs)
    return op


@contextlib.contextmanager
def simulated_cpu(monkeypatch, profile: str = "generic"):
    """Act as on the CPU `profile` (see crossvit.model.fastpaths.support): the fast paths see its
    capabilities, and oneDNN's operators fail as they would there, so that a fast path that runs
    without asking fails here too, whatever this machine is."""
    from crossvit.model.fastpaths import simulate_cpu

    with simulate_cpu(profile), monkeypatch.context() as patch:
        for name in ("_linear_pointwise", "_reorder_linear_weight"):
            if hasattr(torch.ops.mkldnn, name):
                patch.setattr(torch.ops.mkldnn, name, _onednn_op_as_on(profile, name))
        yield


@pytest.fixture(params=["native", "generic"])
def cpu_mode(request, monkeypatch):
    """Run a test on this CPU as it is, then as on a CPU without native bf16 and without
    oneDNN's operators (CROSSVIT_CPU=generic)."""
    if request.param == "native":
        yield request.param
    else:
        with simulated_cpu(monkeypatch, request.param):
            yield request.param


@pytest.fixture
def small_model():
    torch.manual_seed(0)
    return small_config()


def facts_table() -> dict[str, tuple[int, float]]:
    """Exact params and measured GMACs per variant, read from the facts file (the spec),
    which lies in ../shared beside the checkout."""
    if not FACTS.is_file():
        pytest.skip(f"facts file {FACTS} not found")
    rows = {}
    for line in FACTS.read_text().splitlines():
        m = re.match(r"\|\s*(crossvit_\w+)\s*\|\s*([\d,]+)\s*\|\s*[\d.]+\s*\|\s*([\d.]+)\s*\|", line)
        if m:
            rows[m.group(1)] = (int(m.group(2).replace(",", "")), float(m.group(3)))
    assert len(rows) == 11, f"expected 11 variants in the facts file, found {sorted(rows)}"
    return rows
