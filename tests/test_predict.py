"""`crossvit predict` and `predict_paths`: the model's own probabilities, for any image, with bad files named."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import crossvit
from crossvit.cli import main
from crossvit.inference import load_for_inference, predict_paths

from conftest import small_config
from imagegen import write_every_mode

NAMES = ["heron", "kestrel", "wren"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-class model, its checkpoint with class names, and 32 px RGB images the model takes as they are."""
    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    model = small_config(num_classes=3, drop_rate=0.5).eval()  # dropout: predictions must run in eval mode
    checkpoint = crossvit.save_checkpoint(model, root / "birds.safetensors", meta={"class_names": NAMES})
    rng = np.random.default_rng(0)
    (root / "images" / "nested").mkdir(parents=True)
    paths = []
    for i in range(5):
        path = root / "images" / ("nested" if i % 2 else "") / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return model, checkpoint, sorted(paths)


def reference_probabilities(model, paths):
    """Softmax of the model's logits on images normalised by hand (32 px in: the transform only normalises)."""
    mean, std = np.array(model.meta.mean), np.array(model.meta.std)
    pixels = np.stack([(np.asarray(Image.open(p), dtype=np.float64) / 255 - mean) / std for p in paths])
    with torch.no_grad():
        return model(torch.tensor(pixels, dtype=torch.float32).permute(0, 3, 1, 2)).softmax(-1).numpy()


def as_matrix(predictions):
    """Predictions back to a (images, classes) probability matrix, by class index."""
    matrix = np.zeros((len(predictions), len(NAMES)))
    for row, p in enumerate(predictions):
        for t in p["top_k"]:
            matrix[row, t["index"]] = t["probability"]
    return matrix


def test_probabilities_are_the_models_softmax_at_any_batch_size(trained):
    model, checkpoint, paths = trained
    loaded, names = load_for_inference(checkpoint)
    assert names == NAMES
    expected = reference_probabilities(model, paths)
    for batch_size in (1, 4):
        predictions, failures = predict_paths(loaded, paths, top_k=3, batch_size=batch_size, class_names=names)
        assert failures == [] and [p["path"] for p in predictions] == paths
        np.testing.assert_allclose(as_matrix(predictions), expected, atol=1e-5)
        for p in predictions:
            probs = [t["probability"] for t in p["top_k"]]
            assert probs == sorted(probs, reverse=True)
            assert all(t["class"] == NAMES[t["index"]] for t in p["top_k"])


def test_class_names_fall_back_to_indices(tmp_path):
    path = crossvit.save_checkpoint(small_config(num_classes=3), tmp_path / "plain.safetensors")
    assert load_for_inference(path)[1] == ["class_0", "class_1", "class_2"]


def test_human_output_walks_folders_and_names_classes(trained, capsys):
    model, checkpoint, paths = trained
    assert main(["predict", str(checkpoint), str(Path(paths[0]).parent), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = reference_probabilities(model, paths)
    assert [line.split()[0] for line in lines] == paths  # nested folder found, sorted
    for line, probs in zip(lines, expected):
        best = int(probs.argmax())
        assert line.split()[1:3] == [NAMES[best], f"{100 * probs[best]:.1f}%"] and len(line.split()) == 5


def test_every_image_mode_is_read_for_colour_and_grey_models(tmp_path):
    files = [str(p) for p in write_every_mode(tmp_path / "modes")]
    for model in (small_config(num_classes=3), small_config(num_classes=3, in_chans=1)):
        predictions, failures = predict_paths(model, files, top_k=1)
        assert failures == [] and len(predictions) == len(files)


def test_bad_files_are_named_and_the_others_predicted(trained, tmp_path, monkeypatch, capsys):
    _, checkpoint, paths = trained
    good = Path(paths[0]).read_bytes()
    bad = {"corrupt.png": b"not an image at all", "zero.jpg": b"", "truncated.png": good[: len(good) // 3]}
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # PIL's bomb guard, at a size a test can afford
    Image.new("RGB", (64, 64)).save(tmp_path / "bomb.png")
    (tmp_path / "empty").mkdir()
    inputs = [*paths[:2], str(tmp_path / "missing.png"), str(tmp_path / "empty"), *(str(tmp_path / n) for n in [*bad, "bomb.png"])]

    assert main(["predict", str(checkpoint), *inputs, "--json"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert [p["path"] for p in report["predictions"]] == paths[:2]
    failed = {Path(f["path"]).name: f["error"] for f in report["failed"]}
    assert set(failed) == {"missing.png", "empty", "corrupt.png", "zero.jpg", "truncated.png", "bomb.png"}
    assert "no such file" in failed["missing.png"] and "0 bytes" in failed["zero.jpg"]
    assert "decompression bomb" in failed["bomb.png"] and "no images" in failed["empty"]
    errors = captured.err.splitlines()
    assert len(errors) == 6 and all(any(name in line for line in errors) for name in failed)


def test_no_images_at_all_is_a_one_line_usage_error(trained, tmp_path, capsys):
    _, checkpoint, _ = trained
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(checkpoint), str(tmp_path / "empty")]) == 2
    assert main(["predict", str(tmp_path / "nope.pth"), str(tmp_path / "empty")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors[0].startswith("crossvit predict: error: no images found in") and "empty" in errors[0]
    assert errors[1].startswith("crossvit predict: error: checkpoint") and "nope.pth" in errors[1]
    assert len(errors) == 2
