"""The `crossvit` command line."""

import json
import subprocess
import sys

import crossvit
from crossvit.cli import main



def test_models_json_counts_match_the_published_numbers(capsys):
    assert main(["models", "crossvit_1*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == crossvit.list_models("crossvit_1*")
    for row in rows:
        meta = crossvit.get_variant(row["name"]).meta  # the published numbers, kept in the registry
        assert row["params"] == meta.params and abs(row["gmacs"] / meta.gmacs - 1) < 0.002


def test_models_table_shows_paper_numbers_beside_ours(capsys):
    assert main(["models", "crossvit_9_240"]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.startswith("crossvit_9_240"))
    assert line.split() == ["crossvit_9_240", "crossvit_9_224", "3x240x240", "8,553,296", "1.84", "8.6", "1.8",
                            "73.9", "73.99"]


def test_models_with_no_match(capsys):
    assert main(["models", "resnet*"]) == 1
    assert "no model matches" in capsys.readouterr().out


def test_info_describes_our_checkpoint(tmp_path, capsys):
    model = crossvit.create_model("crossvit_micro_28")
    path = crossvit.save_checkpoint(model, tmp_path / "m.safetensors")
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layout"] == "crossvit" and info["params"] == sum(p.numel() for p in model.parameters())
    assert info["config"]["in_chans"] == 1 and info["meta"]["class_names"][0] == "T-shirt/top"


def test_errors_are_one_line_with_exit_code_2(tmp_path):
    (tmp_path / "broken.pth").write_bytes(b"PK\x03\x04 not really a zip")
    result = subprocess.run([sys.executable, "-m", "crossvit", "info", str(tmp_path / "broken.pth")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("crossvit info: error: checkpoint")
    assert "broken.pth" in result.stderr and "Traceback" not in result.stderr


def test_tour_runs_end_to_end(tmp_path):
    result = subprocess.run([sys.executable, "-m", "crossvit", "tour", "--output", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "identical logits = True" in result.stdout
    assert (tmp_path / "crossvit_9_240.safetensors").is_file()


def test_demo_trains_evaluates_and_continues(tmp_path):
    from imagegen import make_fashion_mnist

    data = make_fashion_mnist(tmp_path / "fm", train=128, val=40)
    args = [sys.executable, "-m", "crossvit", "demo", "--data", str(data), "--output", str(tmp_path / "run"),
            "epochs=1", "data.batch_size=32", "train.threads=1"]
    result = subprocess.run(args + ["aug.hflip=0.5"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "on 40 images: top-1" in result.stdout and "mirror image (crossvit eval --flip): top-1" in result.stdout
    for name in ("curves.png", "best.pth", "eval/confusion.png", "eval/eval.json", "eval-flip/eval.json", "report.html",
                 "command.txt"):
        assert (tmp_path / "run" / name).is_file(), name
    again = subprocess.run(args + ["aug.hflip=0"], capture_output=True, text=True)  # evaluated again, not retrained
    assert again.returncode == 0 and "(continuing)" in again.stdout
    assert "mirror image" not in again.stdout  # a model never shown mirrored images is not judged on them


def test_output_piped_into_a_reader_that_leaves_early_is_not_an_error():
    # `crossvit models --json | head -1`: the reader is gone before we write (we close our end
    # while the child is still importing torch).
    child = subprocess.Popen([sys.executable, "-m", "crossvit", "models", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child.stdout.close()
    err = child.stderr.read()
    assert child.wait() == 0, err[-500:]
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_help_and_argument_errors_do_not_wait_for_torch():
    """`crossvit --help`, every command's parser and a wrong argument load neither torch nor numpy."""
    probe = ("import sys\nfrom crossvit import cli\ncli.build_parser()\n"
             "try:\n    cli.main(['train'])\nexcept SystemExit as e:\n    assert e.code == 2, e.code\n"
             "loaded = [m for m in ('torch', 'numpy') if m in sys.modules]\nassert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "crossvit train: error: the following arguments are required" in result.stderr
