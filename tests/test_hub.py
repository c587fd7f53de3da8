"""torch.hub: the repository's hubconf.py gives every variant, its pretrained path included."""

from pathlib import Path

import torch

import crossvit

ROOT = Path(__file__).resolve().parents[1]


def test_every_variant_is_a_hub_entry_point():
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    # what torch.hub.list shows: the public callables
    entries = {name for name in dir(hubconf) if callable(getattr(hubconf, name)) and not name.startswith("_")}
    assert entries == set(crossvit.list_models())
    assert hubconf.dependencies == ["torch", "safetensors"]


def test_a_hub_model_loads_published_weights_through_the_real_download(tmp_path, monkeypatch):
    """pretrained=True runs the download code against a file:// URL standing in for the release."""
    torch.manual_seed(0)
    reference = crossvit.create_model("crossvit_micro_32").eval()
    weights = tmp_path / "release" / "crossvit_micro_32.pth"
    weights.parent.mkdir()
    torch.save(reference.state_dict(), weights)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    model = torch.hub.load(str(ROOT), "crossvit_micro_32", source="local", pretrained=True,
                           pretrained_url=weights.as_uri()).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    assert (tmp_path / "torch-home" / "hub" / "checkpoints" / "crossvit_micro_32.pth").is_file()
    small = torch.hub.load(str(ROOT), "crossvit_micro_32", source="local", num_classes=4)
    assert small.num_classes == 4
