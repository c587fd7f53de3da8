"""`crossvit quantize`: int8 Linear layers that stay close to fp32, save, reload and evaluate."""

import json
import pickle

import pytest
import torch

import crossvit
from crossvit.cli import main
from crossvit.deploy.quantize import Int8Linear, load_quantized, quantize_model, save_quantized

from imagegen import make_folder_dataset


@pytest.fixture
def model():
    torch.manual_seed(0)
    return crossvit.create_model("crossvit_micro_32", num_classes=3).eval()


def _logits(model, x):
    with torch.inference_mode():
        return model(x)


def test_int8_stays_close_to_fp32(model):
    quantized = quantize_model(model)
    layers = [m for m in quantized.modules() if isinstance(m, Int8Linear)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(layers) == len(linears) - 2  # all but the two classifier heads
    assert isinstance(model.encoders[0].branches[0][0].attn.qkv, torch.nn.Linear)  # the original is untouched
    x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    fp32, int8 = _logits(model, x), _logits(quantized, x)
    assert not torch.equal(fp32, int8)  # it really runs in int8
    spread = (fp32 - fp32.mean()).abs().max()
    assert (int8 - fp32).abs().max() < 0.15 * spread
    assert (int8.argmax(1) == fp32.argmax(1)).float().mean() >= 0.9


def test_int8_weights_reconstruct_the_fp32_weights(model):
    layer = model.encoders[1].branches[1][0].mlp.fc1
    q = Int8Linear.from_linear(layer)
    assert q.weight_int8.dtype == torch.int8 and q.weight_int8.abs().max() == 127
    rebuilt = q.weight_int8.float() * q.weight_scale[:, None]
    # Rounding to the nearest of 255 levels per row: off by at most half a step.
    assert ((rebuilt - layer.weight).abs() <= q.weight_scale[:, None] / 2 + 1e-7).all()
    # an MLP's first layer applies the GELU itself, and so does its int8 stand-in
    x = torch.randn(4, layer.in_features)
    assert layer.activation == q.activation == "gelu"
    with torch.no_grad():
        torch.testing.assert_close(q(x), layer(x), atol=0.05, rtol=0.05)
        assert (q(x) > -0.2).all()  # GELU's minimum is about -0.17


def test_save_then_load_gives_identical_outputs_without_unpickling(model, tmp_path, monkeypatch):
    quantized = quantize_model(model)
    save_quantized(quantized, tmp_path / "q.safetensors")
    crossvit.save_checkpoint(model, tmp_path / "fp32.safetensors")
    assert (tmp_path / "q.safetensors").stat().st_size < 0.5 * (tmp_path / "fp32.safetensors").stat().st_size

    def refuse(*args, **kwargs):
        raise AssertionError("loading an int8 model must not unpickle anything")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    loaded = load_quantized(tmp_path / "q.safetensors")
    assert loaded.meta.name == "crossvit_micro_32" and loaded.meta.class_names is None
    x = torch.randn(5, 3, 32, 32)
    assert torch.equal(_logits(loaded, x), _logits(quantized, x))


def test_an_fp32_checkpoint_is_not_taken_for_an_int8_one(model, tmp_path):
    crossvit.save_checkpoint(model, tmp_path / "fp32.safetensors")
    with pytest.raises(crossvit.CheckpointError, match="not an int8 model"):
        load_quantized(tmp_path / "fp32.safetensors")


def test_quantize_command_then_eval_of_the_int8_file(model, tmp_path, capsys):
    data = make_folder_dataset(tmp_path / "data", classes=3, train_per_class=1, val_per_class=8)
    crossvit.save_checkpoint(model, tmp_path / "m.safetensors")
    assert main(["quantize", str(tmp_path / "m.safetensors"), "--bench", "--bench-batch", "4", "--rounds", "2",
                 "--data", str(data), "--dataset", "folder"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'm.int8.safetensors'}" in out
    assert "fp32:" in out and "int8:" in out and "speed-up (median)" in out
    assert "top-1 on 24 images: fp32" in out

    def evaluate(path, *extra):
        assert main(["eval", str(path), "--data", str(data), "--dataset", "folder", "--json",
                     "--output", str(tmp_path / "ev"), *extra]) == 0
        return json.loads(capsys.readouterr().out)

    fp32, int8 = evaluate(tmp_path / "m.safetensors"), evaluate(tmp_path / "m.int8.safetensors")
    assert int8["samples"] == 24
    assert f"int8 {int8['top1']:.2f}%" in out  # what quantize reported is what eval measures
    # Each image predicted differently moves one count between two cells of the confusion matrix.
    moved = sum(abs(a - b) for ra, rb in zip(fp32["confusion"], int8["confusion"]) for a, b in zip(ra, rb)) / 2
    assert moved <= 2
    assert main(["eval", str(tmp_path / "m.int8.safetensors"), "--data", str(data), "--precision", "bf16"]) == 2
    assert "is an int8 model" in capsys.readouterr().err

    # predict reads the int8 file too, and agrees with the int8 model on the classes
    images = sorted(str(p) for p in (data / "val").rglob("*.png"))[:4]
    assert main(["predict", str(tmp_path / "m.int8.safetensors"), *images, "--json", "--top-k", "1"]) == 0
    predicted = json.loads(capsys.readouterr().out)["predictions"]
    assert [p["path"] for p in predicted] == images


@pytest.mark.parametrize("command, message", [
    (["quantize", "q.safetensors"], "already an int8 model"),
    (["export", "q.safetensors", "--format", "onnx"], "is an int8 model from `crossvit quantize`"),
    (["quantize", "missing.pth"], "missing.pth does not exist"),
])
def test_bad_input_is_one_line(command, message, model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    save_quantized(quantize_model(model), tmp_path / "q.safetensors")
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"crossvit {command[0]}: error:") and message in err and err.count("\n") == 1
