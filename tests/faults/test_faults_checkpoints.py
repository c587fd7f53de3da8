"""Hostile checkpoint files, through every entry point that reads one.

A pickle that would run code is refused without running it; truncated, empty, random, damaged,
non-finite and foreign-architecture files each get one clear line. From the library that is a
CheckpointError; from the command line it is exit code 2 and exactly one line on stderr, naming the
file, never a traceback, and nothing written. The authors' and timm's layouts still load.
"""

from __future__ import annotations

import ast
import json
import logging
import pickle
import re
import shutil
import struct
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import save_file

import crossvit
from crossvit.cli import main
from crossvit.model.layouts import foreign_key_to_ours

from imagegen import make_folder_dataset
from tinyrun import PLAIN, tiny_args, tiny_config, one_thread  # noqa: F401 (an autouse fixture)

SRC = Path(crossvit.__file__).resolve().parent
TINY_ARCH = dict(dim=(32, 64), num_heads=(2, 2), depth=(1, 1), num_encoders=2, mlp_ratio=2.0)  # tinyrun's TINY


def tiny_model(num_classes: int = 3, **changes) -> crossvit.CrossViT:
    torch.manual_seed(0)
    return crossvit.create_model("crossvit_micro_32", **{**TINY_ARCH, **changes}, num_classes=num_classes)


def _logits(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


# -- what the command line shows ----------------------------------------------------------

SILENT_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def run_cli(argv: list, capsys, caplog) -> tuple[int, str, list[str]]:
    """`crossvit ARGV` in this process: exit code, stdout, and every line a user would see on stderr:
    what was printed there, log records (the CLI logs to stderr) and the warnings Python would show."""
    capsys.readouterr()
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = err.splitlines() + [f"{r.levelname}: {r.getMessage()}" for r in caplog.records]
    lines += [f"{w.category.__name__}: {w.message}" for w in caught if not issubclass(w.category, SILENT_WARNINGS)]
    return code, out, lines


def assert_one_line_error(code: int, lines: list[str], command: str, names: Path | str, reason: str) -> None:
    assert code == 2, lines
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n" + "\n".join(lines)
    line = lines[0]
    assert line.startswith(f"crossvit {command}: error: "), line
    assert str(names) in line, f"the error does not name {names}: {line}"
    assert re.search(reason, line), f"expected /{reason}/ in: {line}"
    assert "Traceback" not in line


# -- the hostile files --------------------------------------------------------------------

class Payload:
    """Unpickling this creates `marker`: the proof that code from the file ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@dataclass(frozen=True)
class Hostile:
    name: str  # the file's name, which tells torch or safetensors nothing: content decides
    make: Callable[[Path, Path], None]  # make(path, marker)
    reason: str  # regex the one-line error must match
    architecture: bool = False  # readable, but the weights do not fit: create_model / eval refuse, info describes
    needs_name: bool = False  # records no architecture: the commands get --model crossvit_micro_32
    readable: bool = False  # a readable file of tensors (whatever they are), so no training checkpoint either


def _good_safetensors() -> bytes:
    return _saved(tiny_model(), ".safetensors")


def _saved(model, suffix: str) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        return crossvit.save_checkpoint(model, Path(scratch) / f"m{suffix}").read_bytes()


def _header_length(data: bytes) -> int:
    return struct.unpack("<Q", data[:8])[0]


def _malicious_zip(path, marker):
    torch.save({"state_dict": tiny_model().state_dict(), "payload": Payload(str(marker))}, path)


def _malicious_bare_pickle(path, marker):
    with open(path, "wb") as f:  # protocol 2: the unpickler reaches the global `open` before refusing it
        pickle.dump({"model": Payload(str(marker))}, f, protocol=2)


def _malicious_pickle_protocol_4(path, marker):
    with open(path, "wb") as f:
        pickle.dump(Payload(str(marker)), f, protocol=4)


def _truncated_pth(path, marker):
    data = _saved(tiny_model(), ".pth")
    path.write_bytes(data[: len(data) // 2])


def _cut_in_length(path, marker):
    path.write_bytes(_good_safetensors()[:5])


def _cut_in_header(path, marker):
    data = _good_safetensors()
    path.write_bytes(data[: 8 + _header_length(data) // 2])


def _cut_in_data(path, marker):
    data = _good_safetensors()
    start = 8 + _header_length(data)
    path.write_bytes(data[: start + (len(data) - start) // 2])


def _huge_tensor(path, marker):
    # A header that promises a 4 TiB tensor over 64 bytes of data: refused before anything is allocated.
    header = json.dumps({"w": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 4 * 2**40]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(64))


def _huge_header(path, marker):
    path.write_bytes(struct.pack("<Q", 2**60) + b'{"w": 1}')


def _random_bytes(path, marker):
    # Seeded; its first byte is no pickle opcode that names a global, so "corrupt" is the honest answer.
    path.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(3),
                                         dtype=torch.uint8).tolist()))


def _empty(path, marker):
    path.write_bytes(b"")


def _directory(path, marker):
    path.mkdir()


def _resnet(path, marker):
    save_file({"conv1.weight": torch.zeros(8, 3, 7, 7), "bn1.weight": torch.ones(8), "bn1.bias": torch.zeros(8),
               "layer1.0.conv1.weight": torch.zeros(8, 8, 3, 3), "fc.weight": torch.zeros(3, 8),
               "fc.bias": torch.zeros(3)}, path)


def _wider_crossvit(path, marker):
    torch.save(tiny_model(dim=(48, 96)).state_dict(), path)  # a plain state dict: no architecture recorded


def _mislabelled(path, marker):
    # Our format, recording the tiny model's architecture over a wider model's tensors.
    from safetensors import safe_open

    good = path.with_suffix(".good")
    good.write_bytes(_good_safetensors())
    with safe_open(str(good), framework="pt") as f:
        header = f.metadata()
    good.unlink()
    state = {k: v.contiguous() for k, v in tiny_model(dim=(48, 96)).state_dict().items()}
    save_file(state, path, metadata=header)


def _nan(path, marker):
    model = tiny_model()
    with torch.no_grad():
        model.heads[0].weight[0, 0] = float("nan")
    path.write_bytes(_saved(model, ".safetensors"))


def _inf(path, marker):
    model = tiny_model()
    with torch.no_grad():
        model.pos_embeds[1][0, 0, 0] = float("-inf")
    path.write_bytes(_saved(model, ".pth"))


def _damaged_record(path, marker):
    save_file({"heads.0.weight": torch.zeros(3, 32)}, path, metadata={"format": "crossvit", "config": "{not json"})


def _record_without_branches(path, marker):
    torch.save({"state_dict": tiny_model().state_dict(), "crossvit": {"config": {"img_size": 32}}}, path)


def _integer_keys(path, marker):
    torch.save({0: torch.zeros(3), 1: torch.ones(3)}, path)


CODE = r"refusing to load .*could run arbitrary code"
CORRUPT_PTH = r"not a readable PyTorch file \(truncated or corrupt\?\)"
CORRUPT_ST = r"not a readable safetensors file \(truncated or corrupt\?\)"
MISFIT = r"does not fit this model"
HOSTILE = [
    Hostile("malicious.pth", _malicious_zip, r"refusing to load .*besides tensors \(io\.open\).*arbitrary code"),
    Hostile("malicious_bare_pickle.pth", _malicious_bare_pickle, CODE),
    Hostile("malicious_pickle_protocol_4.pkl", _malicious_pickle_protocol_4, CORRUPT_PTH),
    Hostile("truncated.pth", _truncated_pth, CORRUPT_PTH),
    Hostile("cut_in_header_length.safetensors", _cut_in_length, CORRUPT_ST),
    Hostile("cut_in_json_header.safetensors", _cut_in_header, CORRUPT_ST),
    Hostile("cut_in_tensor_data.safetensors", _cut_in_data, CORRUPT_ST),
    Hostile("claims_a_huge_tensor.safetensors", _huge_tensor, CORRUPT_ST),
    Hostile("claims_a_huge_header.safetensors", _huge_header, CORRUPT_ST + r".*header too large"),
    Hostile("random_bytes.pth", _random_bytes, CORRUPT_PTH),
    Hostile("empty.pth", _empty, r"is empty \(0 bytes\)"),
    Hostile("a_directory.pth", _directory, r"is a directory"),
    Hostile("resnet.safetensors", _resnet, MISFIT + r".*unexpected keys \[bn1", architecture=True, needs_name=True,
            readable=True),
    Hostile("wider_crossvit.pth", _wider_crossvit, MISFIT + r".*shape mismatches", architecture=True, needs_name=True,
            readable=True),
    Hostile("mislabelled_crossvit.safetensors", _mislabelled, MISFIT + r".*shape mismatches", architecture=True, readable=True),
    Hostile("nan.safetensors", _nan, r"NaN or infinite values in 1 tensor\(s\), e\.g\. heads\.0\.weight"),
    Hostile("inf.pth", _inf, r"NaN or infinite values in 1 tensor\(s\), e\.g\. state_dict\.pos_embeds\.1"),
    Hostile("damaged_record.safetensors", _damaged_record, r"damaged crossvit record", readable=True),
    Hostile("record_without_branches.pth", _record_without_branches, r"damaged crossvit record \(missing 'branches'\)",
            readable=True),
    Hostile("integer_keys.pth", _integer_keys, r"holds no state dict of tensors named by strings", readable=True),
]
BY_NAME = {h.name: h for h in HOSTILE}


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory):
    """Every hostile file, made once; `marker` is what a payload would create."""
    folder = tmp_path_factory.mktemp("hostile")
    marker = folder.parent / f"{folder.name}-pwned"
    for h in HOSTILE:
        h.make(folder / h.name, marker)
    return folder, marker


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder_dataset(tmp_path_factory.mktemp("data"), classes=3, train_per_class=8, val_per_class=4)


# -- the payload is live: it would run if anything unpickled it carelessly ----------------

def test_the_payloads_really_run_code_when_unpickled_carelessly(tmp_path):
    """Guards the tests below: the malicious files do create their marker under plain pickle or
    torch.load(weights_only=False), so the marker's absence there means something."""
    for make, load in ((_malicious_zip, lambda p: torch.load(p, weights_only=False)),
                       (_malicious_bare_pickle, lambda p: pickle.loads(p.read_bytes())),
                       (_malicious_pickle_protocol_4, lambda p: pickle.loads(p.read_bytes()))):
        marker = tmp_path / f"{make.__name__}-pwned"
        make(tmp_path / make.__name__, marker)
        load(tmp_path / make.__name__)
        assert marker.exists(), make.__name__


def test_every_torch_load_in_the_source_passes_weights_only_true():
    """The one safe way to unpickle: every torch.load in src/crossvit says weights_only=True, and
    nothing calls pickle.load directly."""
    calls = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
                if owner == "pickle" and node.func.attr in ("load", "loads", "Unpickler"):
                    pytest.fail(f"{path}:{node.lineno} unpickles without torch's weights-only guard")
                if owner == "torch" and node.func.attr == "load":
                    safe = [k for k in node.keywords if k.arg == "weights_only"]
                    assert safe and isinstance(safe[0].value, ast.Constant) and safe[0].value.value is True, \
                        f"{path}:{node.lineno}: torch.load without weights_only=True"
                    calls.append(f"{path.name}:{node.lineno}")
    assert calls, "no torch.load found at all: has loading moved out of src/crossvit?"


# -- the library --------------------------------------------------------------------------

@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: h.name)
def test_library_refuses_with_one_line_naming_the_file(hostile, hostile_dir):
    """create_model(checkpoint=...), read_checkpoint and load_checkpoint each raise one
    CheckpointError line naming the file and why; no payload runs."""
    folder, marker = hostile_dir
    path = folder / hostile.name
    attempts = [lambda: crossvit.create_model("crossvit_micro_32", **TINY_ARCH, num_classes=3, checkpoint=path),
                lambda: crossvit.load_checkpoint(tiny_model(), path)]
    if not hostile.architecture:
        attempts += [lambda: crossvit.read_checkpoint(path), lambda: crossvit.create_model(checkpoint=path)]
    for attempt in attempts:
        with pytest.raises(crossvit.CheckpointError) as err:
            attempt()
        message = str(err.value)
        assert "\n" not in message and str(path) in message and re.search(hostile.reason, message), message
    assert not marker.exists()


# -- the commands -------------------------------------------------------------------------

MODEL = ["--model", "crossvit_micro_32"]


def _image(tmp_path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "red.png")
    return tmp_path / "red.png"


def _command(command: str, path: Path, hostile: Hostile, tmp_path: Path, data: Path) -> tuple[list, list[Path]]:
    """The arguments that make `command` read `path`, and the outputs it must not leave behind."""
    name = MODEL if hostile.needs_name else []
    if command == "eval":
        return ["eval", path, "--data", data, "--output", tmp_path / "eval", *name], [tmp_path / "eval"]
    if command == "predict":
        return ["predict", path, _image(tmp_path), *name], []
    if command == "attention":
        return ["attention", path, _image(tmp_path), "--output", tmp_path / "att", *name], [tmp_path / "att"]
    if command == "export":
        out = tmp_path / "exported.safetensors"
        return ["export", path, "--format", "safetensors", "--output", out, *name], [out]
    if command == "quantize":
        return ["quantize", path, "--output", tmp_path / "int8.safetensors", *name], [tmp_path / "int8.safetensors"]
    if command == "info":
        return ["info", path], []
    if command == "finetune":
        return ["train", *tiny_args(data, f"model.checkpoint={path}"), "--output", tmp_path / "run"], [tmp_path / "run"]
    raise AssertionError(command)


COMMANDS = ["eval", "predict", "attention", "export", "quantize", "info", "finetune"]


# `info` describes any readable file: fitting a model (another architecture) is not its job.
CASES = [(c, h) for c in COMMANDS for h in HOSTILE if not (c == "info" and h.architecture)]


@pytest.mark.parametrize("command, hostile", CASES, ids=lambda v: v if isinstance(v, str) else v.name)
def test_command_refuses_with_one_line_naming_the_file(command, hostile, hostile_dir, data, tmp_path, capsys, caplog):
    """Each command that takes a checkpoint (and `train model.checkpoint=`) exits 2 with one
    stderr line naming the file and the reason, writes nothing, and never runs a payload."""
    folder, marker = hostile_dir
    path = folder / hostile.name
    argv, outputs = _command(command, path, hostile, tmp_path, data)
    code, _, lines = run_cli(argv, capsys, caplog)
    shown = "train" if command == "finetune" else command
    assert_one_line_error(code, lines, shown, path, hostile.reason)
    assert not marker.exists()
    for output in outputs:
        assert not output.exists(), f"{output} was written"


def test_info_describes_foreign_architectures_without_judging_them(hostile_dir, capsys, caplog):
    """`crossvit info` reads a readable file of another architecture and says what it holds."""
    folder, _ = hostile_dir
    for hostile in (h for h in HOSTILE if h.architecture):
        code, out, lines = run_cli(["info", folder / hostile.name, "--json"], capsys, caplog)
        assert code == 0 and lines == [], lines
        assert json.loads(out)["file"] == str(folder / hostile.name)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data):
    """A one-epoch run fine-tuned from an official-layout file: its directory, for --resume."""
    from crossvit.training.trainer import train

    folder = tmp_path_factory.mktemp("finished")
    # Position embeddings shifted by 1, far from any fresh initialisation: the trained run's show where it began.
    state = {k: v + 1 if k.startswith("pos_embeds.") else v for k, v in tiny_model().state_dict().items()}
    torch.save(_foreign_state(state, "official"), folder / "official.pth")
    before = torch.get_num_threads()
    train(tiny_config(data, "epochs=1", *PLAIN, f"model.checkpoint={folder / 'official.pth'}"), folder / "run")
    torch.set_num_threads(before)  # train.threads=1 changed it
    return folder / "run"


def _run_with_last(tmp_path: Path, finished: Path, make_last: Callable[[Path], None]) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "last.pth").unlink()
    make_last(run / "last.pth")
    return run


def _unchanged(run: Path, finished: Path) -> None:
    for name in ("metrics.jsonl", "config.yaml"):
        assert (run / name).read_bytes() == (finished / name).read_bytes(), f"{name} changed"


# Named last.pth, five bytes of a safetensors file no longer say which format they were meant to be.
RESUME_REASON = {"cut_in_header_length.safetensors": CORRUPT_PTH}
@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: h.name)
def test_resume_refuses_a_hostile_last_checkpoint(hostile, hostile_dir, finished_run, tmp_path, capsys, caplog):
    """`train --resume` on a run whose last.pth is hostile: one line naming it, the run left as it was.
    A model checkpoint of any architecture is no training checkpoint."""
    folder, marker = hostile_dir
    source = folder / hostile.name
    run = _run_with_last(tmp_path, finished_run,
                         lambda last: last.mkdir() if source.is_dir() else shutil.copy(source, last))
    code, _, lines = run_cli(["train", "small_folder", "--output", run, "--resume"], capsys, caplog)
    reason = r"not a training checkpoint of crossvit" if hostile.readable else RESUME_REASON.get(hostile.name, hostile.reason)
    assert_one_line_error(code, lines, "train", run / "last.pth", reason)
    assert not marker.exists()
    _unchanged(run, finished_run)


def test_resume_refuses_non_finite_optimizer_state(finished_run, tmp_path, capsys, caplog):
    """NaN anywhere in a training checkpoint (here an Adam moment) stops --resume with one line."""
    def poisoned(last: Path) -> None:
        state = torch.load(finished_run / "last.pth", weights_only=True)
        moment = next(s for s in state["optimizer"]["state"].values() if "exp_avg" in s)["exp_avg"]
        moment.view(-1)[0] = float("nan")
        torch.save(state, last)

    run = _run_with_last(tmp_path, finished_run, poisoned)
    code, _, lines = run_cli(["train", "small_folder", "--output", run, "--resume"], capsys, caplog)
    assert_one_line_error(code, lines, "train", run / "last.pth", r"NaN or infinite .*e\.g\. optimizer\.state\.\d+\.exp_avg")
    _unchanged(run, finished_run)


TAMPERED_TRAINING_CHECKPOINTS = {
    "weights_of_another_architecture": lambda s: {**s, "model": tiny_model(dim=(48, 96)).state_dict()},
    "without_the_model_record": lambda s: {k: v for k, v in s.items() if k != "crossvit"},
    "without_the_run_config": lambda s: {k: v for k, v in s.items() if k != "run_config"},
}


@pytest.mark.parametrize("tamper", TAMPERED_TRAINING_CHECKPOINTS, ids=str)
def test_resume_refuses_a_tampered_training_checkpoint(tamper, finished_run, tmp_path, capsys, caplog):
    """A training checkpoint with the right keys but edited contents is still one line naming it."""
    def tampered(last: Path) -> None:
        torch.save(TAMPERED_TRAINING_CHECKPOINTS[tamper](torch.load(finished_run / "last.pth", weights_only=True)), last)

    run = _run_with_last(tmp_path, finished_run, tampered)
    code, _, lines = run_cli(["train", "small_folder", "--output", run, "--resume"], capsys, caplog)
    assert_one_line_error(code, lines, "train", run / "last.pth", r".")


def test_a_real_process_prints_one_line_and_runs_no_payload(hostile_dir, tmp_path):
    """Outside pytest's capture: the installed command on a malicious pickle and on random bytes
    exits 2 with one stderr line, no traceback and no torch warning, and no marker appears."""
    folder, marker = hostile_dir
    script = ("import sys\nfrom crossvit.cli import main\n"
              "for argv in (['info', sys.argv[1]], ['predict', sys.argv[2], sys.argv[3]]):\n"
              "    code = main(argv)\n    print('exit', code, file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", script, folder / "malicious_bare_pickle.pth",
                             folder / "random_bytes.pth", _image(tmp_path)], capture_output=True, text=True, timeout=120)
    lines = result.stderr.splitlines()
    assert lines[1::2] == ["exit 2", "exit 2"], result.stderr
    assert re.fullmatch(rf"crossvit info: error: refusing to load {re.escape(str(folder))}/malicious_bare_pickle.pth: .*",
                        lines[0]), lines[0]
    assert re.fullmatch(rf"crossvit predict: error: checkpoint {re.escape(str(folder))}/random_bytes.pth is not a "
                        r"readable PyTorch file .*", lines[2]), lines[2]
    assert len(lines) == 4 and not marker.exists()


# -- what still loads ---------------------------------------------------------------------

OURS_TO_OFFICIAL = [  # the inverse of layouts.py's renaming, for one fusion layer
    (r"^tokenizers\.(\d+)\.", r"patch_embed.\1."),
    (r"^cls_tokens\.(\d+)$", r"cls_token.\1"),
    (r"^pos_embeds\.(\d+)$", r"pos_embed.\1"),
    (r"^encoders\.(\d+)\.branches\.", r"blocks.\1.blocks."),
    (r"^encoders\.(\d+)\.fusion\.project\.", r"blocks.\1.projs."),
    (r"^encoders\.(\d+)\.fusion\.revert\.", r"blocks.\1.revert_projs."),
    (r"^encoders\.(\d+)\.fusion\.attend\.(\d+)\.0\.norm\.", r"blocks.\1.fusion.\2.norm1."),
    (r"^encoders\.(\d+)\.fusion\.attend\.(\d+)\.0\.([qkv])\.", r"blocks.\1.fusion.\2.attn.w\3."),
    (r"^encoders\.(\d+)\.fusion\.attend\.(\d+)\.0\.proj\.", r"blocks.\1.fusion.\2.attn.proj."),
    (r"^norms\.(\d+)\.", r"norm.\1."),
    (r"^heads\.(\d+)\.", r"head.\1."),
]


def _foreign_state(state: dict, layout: str) -> dict:
    """Our state dict renamed as the authors' release (`pos_embed.0`) or timm (`pos_embed_0`) names it."""
    out = {}
    for key, value in state.items():
        foreign = key
        for pattern, replacement in OURS_TO_OFFICIAL:
            foreign = re.sub(pattern, replacement, foreign)
        if layout == "timm":
            foreign = re.sub(r"^(pos_embed|cls_token)\.(\d+)$", r"\1_\2", foreign)
        assert foreign_key_to_ours(foreign) == key, (key, foreign)  # the loader's mapping takes it back
        out[foreign] = value.contiguous()
    return out


@pytest.mark.parametrize("layout, suffix", [("official", ".pth"), ("timm", ".safetensors"), ("official", ".safetensors")])
def test_official_and_timm_layouts_still_load(layout, suffix, tmp_path, capsys, caplog):
    """The authors' and timm's names load into the same model with identical logits, through
    create_model and through `crossvit predict --model`; `crossvit info` names the layout."""
    model = crossvit.create_model("crossvit_micro_32").eval()  # a registered name, so --model can name it
    state = _foreign_state(model.state_dict(), layout)
    assert not any(k.startswith(("encoders.", "tokenizers.")) for k in state)
    path = tmp_path / f"{layout}{suffix}"
    if suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save(state, path)

    assert crossvit.read_checkpoint(path).layout == layout
    again = crossvit.create_model("crossvit_micro_32", checkpoint=path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(_logits(again, x), _logits(model, x))

    code, out, lines = run_cli(["info", path], capsys, caplog)
    assert code == 0 and f"{layout} layout" in out, (out, lines)
    code, out, lines = run_cli(["predict", path, _image(tmp_path), *MODEL, "--top-k", "1"], capsys, caplog)
    assert code == 0 and lines == [] and out.startswith(str(tmp_path / "red.png")), (out, lines)


def test_fine_tuning_from_an_official_file_starts_from_its_weights(finished_run):
    """`train model.checkpoint=official.pth` (the finished_run fixture) loads that file: three small
    Adam steps later the position embeddings are still those of the file, 1 away from a fresh model's."""
    start = crossvit.read_checkpoint(finished_run.parent / "official.pth").state["pos_embeds.0"]
    trained = crossvit.create_model(checkpoint=finished_run / "best.pth").pos_embeds[0].detach()
    assert (trained - start).abs().max() < 0.05
    assert (tiny_model().pos_embeds[0].detach() - start).abs().mean() > 0.5


# -- moved from tests/test_checkpoint.py ----------------------------------------------------

def test_missing_and_empty_files(tmp_path):
    """A path with no file, and a zero-byte file, are each named with what is wrong."""
    with pytest.raises(crossvit.CheckpointError, match="does not exist"):
        crossvit.create_model("crossvit_9_240", checkpoint=tmp_path / "nope.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(crossvit.CheckpointError, match="is empty"):
        crossvit.create_model("crossvit_9_240", checkpoint=tmp_path / "empty.pth")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_files(tmp_path, suffix):
    """Half of a saved checkpoint, in either format, is called truncated or corrupt."""
    path = crossvit.save_checkpoint(tiny_model(), tmp_path / f"m{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(crossvit.CheckpointError, match="truncated or corrupt"):
        crossvit.create_model(checkpoint=path)


def test_pickle_that_runs_code_is_refused_without_running_it(tmp_path):
    """A payload inside torch's zip format, or a bare pickle, is refused and its code never runs."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": Payload(str(marker))}, path)
    with pytest.raises(crossvit.CheckpointError, match="refusing to load .*arbitrary code"):
        crossvit.create_model("crossvit_9_240", checkpoint=path)
    assert not marker.exists()
    # A bare pickle (not torch's zip format) is refused too.
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(Payload(str(marker)), f)
    with pytest.raises(crossvit.CheckpointError):
        crossvit.create_model("crossvit_9_240", checkpoint=tmp_path / "evil.pkl")
    assert not marker.exists()


def test_checkpoint_of_another_architecture(tmp_path):
    """Another variant's weights, or a stranger's, name the missing, unexpected and mis-shaped keys in one line."""
    crossvit.save_checkpoint(crossvit.create_model("crossvit_9_240"), tmp_path / "nine.safetensors")
    with pytest.raises(crossvit.CheckpointError) as err:
        crossvit.create_model("crossvit_15_240", checkpoint=tmp_path / "nine.safetensors")
    message = str(err.value)
    assert "does not fit this model" in message and "missing keys" in message
    assert "shape mismatches" in message and "\n" not in message
    save_file({"conv.weight": torch.zeros(3)}, tmp_path / "other.safetensors")
    with pytest.raises(crossvit.CheckpointError, match="unexpected keys \\[conv.weight\\]"):
        crossvit.create_model("crossvit_9_240", checkpoint=tmp_path / "other.safetensors")


def test_nan_weights_are_refused(tmp_path):
    """A NaN weight is refused, naming the tensor that holds it."""
    model = tiny_model()
    with torch.no_grad():
        model.heads[0].weight[0, 0] = float("nan")
    crossvit.save_checkpoint(model, tmp_path / "nan.safetensors")
    with pytest.raises(crossvit.CheckpointError, match="NaN or infinite.*heads.0.weight"):
        crossvit.create_model(checkpoint=tmp_path / "nan.safetensors")
