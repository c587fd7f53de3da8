import os
import re
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

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
