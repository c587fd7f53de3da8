"""`crossvit export`: ONNX, torch.export and safetensors copies that match the eager model."""

import json
import os

import pytest
import torch

import crossvit
from crossvit.cli import main
from crossvit.deploy.export import ExportMismatchError, export_onnx, export_program, export_safetensors

ort = pytest.importorskip("onnxruntime")


def micro():
    torch.manual_seed(0)
    return crossvit.create_model("crossvit_micro_32", num_classes=3).eval()


def dagger_240():
    """The published *_dagger_240 models in miniature: three-convolution tokenizers, and the
    L-branch's input resized inside the model (72 -> 64 px here, 240 -> 224 there)."""
    torch.manual_seed(0)
    model = crossvit.create_model("crossvit_9_dagger_240", img_size=72, dim=(32, 64), num_heads=(2, 2),
                                  depth=(1, 1), num_encoders=1, num_classes=5).eval()
    assert [b.img_size for b in model.config.branches] == [72, 64]
    assert [b.tokenizer for b in model.config.branches] == ["conv3", "conv3"]
    return model


def small_data():
    """The options for small images: shifted-patch tokenizer and locality self-attention."""
    torch.manual_seed(0)
    return crossvit.create_model("crossvit_micro_32", num_classes=3, tokenizer=("shifted", "linear"),
                                 locality_attention=True).eval()


def _images(model, batch, seed):
    size = model.config.img_size
    return torch.randn(batch, model.config.in_chans, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("build", [micro, dagger_240, small_data])
def test_onnx_matches_eager_at_two_batch_sizes(build, tmp_path):
    model = build()
    path = tmp_path / "m.onnx"
    assert export_onnx(model, path) <= 1e-4
    assert os.listdir(tmp_path) == ["m.onnx"]  # one self-contained file, no temporary left
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (images,), (logits,) = session.get_inputs(), session.get_outputs()
    assert (images.name, logits.name) == ("images", "logits")
    assert images.shape[0] == logits.shape[0] == "batch"
    for batch in (1, 4):  # neither is the traced batch (2)
        x = _images(model, batch, seed=10 + batch)
        with torch.no_grad():
            expected = model(x)
        got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    props = session.get_modelmeta().custom_metadata_map
    assert json.loads(props["crossvit.config"])["img_size"] == model.config.img_size
    assert json.loads(props["crossvit.meta"])["mean"] == list(model.meta.mean)


def test_torch_export_round_trip(tmp_path):
    model = dagger_240()
    path = tmp_path / "m.pt2"
    assert export_program(model, path) <= 1e-4
    extra = {"crossvit.json": ""}
    with open(path, "rb") as f:
        loaded = torch.export.load(f, extra_files=extra).module()
    assert json.loads(extra["crossvit.json"])["config"]["num_classes"] == 5
    for batch in (1, 5):
        x = _images(model, batch, seed=batch)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), atol=1e-4, rtol=0)


def test_official_pth_converts_to_our_safetensors(tmp_path, capsys):
    """The authors' layout (here written by timm's own CrossViT, the reference implementation)
    in, our self-describing file out: it rebuilds without a model name and gives timm's logits."""
    timm_crossvit = pytest.importorskip("timm.models.crossvit")
    torch.manual_seed(0)
    reference = timm_crossvit.CrossVit(img_size=32, patch_size=(4, 16), embed_dim=(64, 128), depth=((1, 2, 0),) * 3,
                                       num_heads=(2, 4), mlp_ratio=(3.0, 3.0, 1.0), num_classes=10).eval()
    official = {k.replace("pos_embed_", "pos_embed.").replace("cls_token_", "cls_token."): v
                for k, v in reference.state_dict().items()}
    torch.save(official, tmp_path / "crossvit_micro.pth")
    assert crossvit.read_checkpoint(tmp_path / "crossvit_micro.pth").layout == "official"

    out = tmp_path / "ours.safetensors"
    assert main(["export", str(tmp_path / "crossvit_micro.pth"), "--format", "safetensors",
                 "--model", "crossvit_micro_32", "--output", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    converted = crossvit.create_model(checkpoint=out).eval()  # no name needed any more
    assert converted.meta.name == "crossvit_micro_32"
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), reference(x), atol=1e-5, rtol=0)


def test_a_failed_check_leaves_the_previous_file_alone(tmp_path):
    model = dagger_240()
    path = tmp_path / "m.pt2"
    path.write_bytes(b"the previous export")
    with pytest.raises(ExportMismatchError, match="differ from the eager model"):
        export_program(model, path, atol=-1.0)  # any difference, even 0, is too much
    assert path.read_bytes() == b"the previous export"
    assert os.listdir(tmp_path) == ["m.pt2"]


def test_a_failing_exporter_is_one_line_and_leaves_no_file(tmp_path, monkeypatch, capsys):
    crossvit.save_checkpoint(micro(), tmp_path / "m.safetensors")

    def broken(*args, **kwargs):
        raise torch.onnx.errors.OnnxExporterError("unsupported operator\nwith a long trace")

    monkeypatch.setattr(torch.onnx, "export", broken)
    assert main(["export", str(tmp_path / "m.safetensors"), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crossvit export: error: ONNX export to") and err.count("\n") == 1
    assert "unsupported operator" in err
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_a_failing_torch_export_is_one_line_and_leaves_no_file(tmp_path, monkeypatch, capsys):
    crossvit.save_checkpoint(micro(), tmp_path / "m.safetensors")

    def broken(*args, **kwargs):
        raise RuntimeError("data-dependent control flow\nwith a long trace")

    monkeypatch.setattr(torch.export, "export", broken)
    assert main(["export", str(tmp_path / "m.safetensors"), "--format", "torch-export"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crossvit export: error: torch.export of") and err.count("\n") == 1
    assert "data-dependent control flow" in err
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_safetensors_export_reloads_equal(tmp_path):
    model = dagger_240()
    assert export_safetensors(model, tmp_path / "m.safetensors") == 0.0
    again = crossvit.create_model(checkpoint=tmp_path / "m.safetensors")
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("args, message", [
    (["missing.pth", "--format", "onnx"], "missing.pth does not exist"),
    (["m.safetensors", "--format", "torch-export", "--opset", "17"], "--opset applies to --format onnx only"),
    (["m.safetensors", "--format", "safetensors"], "would overwrite it"),
])
def test_bad_input_is_one_line(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    crossvit.save_checkpoint(micro(), tmp_path / "m.safetensors")
    assert main(["export", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crossvit export: error:") and message in err and err.count("\n") == 1


def test_unknown_format_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "m.safetensors", "--format", "tflite"])
    assert exit_info.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err
