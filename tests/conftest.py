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
