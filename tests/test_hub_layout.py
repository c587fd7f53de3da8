"""The Hugging Face Hub layout: save_pretrained round trips, timm's hub copies load, hf-hub: goes
through huggingface_hub (stubbed: no network)."""

import dataclasses
import json

import pytest
import torch

import crossvit


def test_save_pretrained_round_trips_through_local_dir(tmp_path):
    torch.manual_seed(0)
    model = crossvit.create_model("crossvit_micro_32", num_classes=3, depth=(1, 2)).eval()
    model.meta = dataclasses.replace(model.meta, class_names=("cat", "dog", "fox"))
    crossvit.save_pretrained(model, tmp_path / "mine", card={"dataset": "pets", "validation top-1": "91.00%"})
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    saved = json.loads((tmp_path / "mine" / "config.json").read_text())
    assert saved["architecture"] == "crossvit_micro_32" and saved["label_names"] == ["cat", "dog", "fox"]
    assert saved["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert "dataset: pets" in (tmp_path / "mine" / "README.md").read_text()
    loaded = crossvit.create_model(f"local-dir:{tmp_path / 'mine'}").eval()
    assert loaded.config == model.config and loaded.meta.class_names == ("cat", "dog", "fox")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def _timm_hub_dir(tmp_path, name, safetensors=True, **kwargs):
    """A directory as timm's hub copies are, written by timm's own save_for_hf: its config.json and its
    weights in its layout (model.safetensors, or pytorch_model.bin, save_for_hf's default)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = timm.create_model(name, pretrained=False, **kwargs).eval()
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    directory = tmp_path / name
    timm.models.save_for_hf(reference, str(directory), model_args=kwargs or None, safe_serialization=safetensors)
    return directory, reference


@pytest.mark.parametrize("safetensors", [True, False])
def test_a_timm_hub_copy_gives_timms_logits(tmp_path, safetensors):
    directory, reference = _timm_hub_dir(tmp_path, "crossvit_9_240", safetensors)
    weights = {p.name for p in directory.iterdir()} - {"config.json"}
    assert weights == ({"model.safetensors"} if safetensors else {"pytorch_model.bin"})
    model = crossvit.create_model(f"local-dir:{directory}").eval()
    x = torch.randn(2, 3, 240, 240)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-4)
    assert model.meta.crop_pct == reference.pretrained_cfg["crop_pct"]


def test_a_fine_tuned_timm_hub_copy_keeps_its_classes(tmp_path):
    directory, reference = _timm_hub_dir(tmp_path, "crossvit_tiny_240", num_classes=7)
    model = crossvit.create_model(f"local-dir:{directory}").eval()
    x = torch.randn(1, 3, 240, 240)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-4)
    assert model.num_classes == 7


def test_hf_hub_names_download_through_huggingface_hub(tmp_path, monkeypatch):
    import huggingface_hub

    torch.manual_seed(0)
    model = crossvit.create_model("crossvit_micro_32").eval()
    crossvit.save_pretrained(model, tmp_path / "snapshot")
    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, **kw: asked.append((repo_id, kw)) or str(tmp_path / "snapshot"))
    loaded = crossvit.create_model("hf-hub:someone/crossvit-micro").eval()
    assert asked[0][0] == "someone/crossvit-micro" and "model.safetensors" in asked[0][1]["allow_patterns"]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)

    def offline(repo_id, **kw):
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline mode is enabled and the file is not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(crossvit.CheckpointError, match=r"could not fetch hf-hub:someone/other .*use local-dir:PATH"):
        crossvit.create_model("hf-hub:someone/other")


def test_a_directory_without_the_layout_is_one_line(tmp_path):
    with pytest.raises(crossvit.CheckpointError, match="not a hub-layout model directory: it needs config.json and model.safetensors"):
        crossvit.create_model(f"local-dir:{tmp_path}")
