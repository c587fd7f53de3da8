"""Golden outputs: fixed weights and inputs give the logits recorded in tests/golden/.

timm covers the paper's fusion; these files pin down the other schemes and the CLS-free
variant, which have no outside reference. Regenerate on purpose only: `python tests/test_golden.py` (then review the diff).
"""

import json
from pathlib import Path

import pytest
import torch

from conftest import small_config

GOLDEN = Path(__file__).parent / "golden" / "fusion_logits.json"
CASES = {
    "cross_attention": dict(fusion="cross_attention"),
    "cross_attention_2layers": dict(fusion="cross_attention", fusion_layers=2),
    "all_attention": dict(fusion="all_attention"),
    "class_token": dict(fusion="class_token"),
    "pairwise": dict(fusion="pairwise"),
    "none": dict(fusion="none"),
    "mean_agent": dict(fusion="cross_attention", cls_token=False),
    "conv3_three_branches": dict(patch_size=(4, 8, 16), dim=(32, 64, 64), depth=(1, 2, 1), num_heads=(2, 2, 2),
                                 tokenizer="conv3"),
}


def _logits(options: dict) -> list[list[float]]:
    model = small_config(**options).eval()
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for p in model.parameters():  # weights from a fixed generator, not the init code
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        x = torch.randn(2, 3, 32, 32, generator=gen)
        return model(x).tolist()


@pytest.mark.parametrize("case", CASES)
def test_logits_match_the_golden_file(case):
    expected = json.loads(GOLDEN.read_text())[case]
    torch.testing.assert_close(torch.tensor(_logits(CASES[case])), torch.tensor(expected), rtol=1e-4, atol=1e-5)


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps({name: _logits(opts) for name, opts in CASES.items()}, indent=1) + "\n")
    print(f"rewrote {GOLDEN}")
