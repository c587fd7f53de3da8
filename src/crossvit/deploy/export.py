"""A CrossViT for use outside this library: ONNX, a torch.export program, or our safetensors file.

Every export is checked before it is kept: the written file is loaded back and run on random
images at two batch sizes, both unlike the traced one (so the batch axis is shown to be
dynamic), against the eager model. A file that disagrees by more than `atol`, or whose writing
fails halfway, is removed and the previous file at that path stays as it was.

The files describe themselves: ONNX metadata_props and the .pt2 extra file `crossvit.json`
hold the config and the preprocessing (mean, std, input size, class names).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor

from ..errors import CrossViTError
from ..files import atomic_write
from ..model.checkpoint import model_record, save_checkpoint
from ..model.crossvit import CrossViT

ATOL = 1e-4  # fp32 logits of ONNX Runtime / torch.export against eager PyTorch
FORMATS = {"onnx": ".onnx", "torch-export": ".pt2", "safetensors": ".safetensors"}


class ExportMismatchError(CrossViTError):
    """An exported model whose outputs do not match the eager model's."""


def random_images(model: CrossViT, batch: int, seed: int = 0) -> Tensor:
    c, size = model.config.in_chans, model.config.img_size
    return torch.randn(batch, c, size, size, generator=torch.Generator().manual_seed(seed))


def max_difference(model: CrossViT, run: Callable[[Tensor], Tensor], batch_sizes: tuple[int, ...]) -> float:
    """Largest |run(x) - model(x)| over random images at each batch size."""
    diffs = []
    for i, batch in enumerate(batch_sizes):
        x = random_images(model, batch, seed=i)
        with torch.no_grad():
            diffs.append((run(x).float() - model(x)).abs().max())
    return torch.stack(diffs).max().item()  # NaN, if any, wins


def check_output_path(path: str | os.PathLike) -> None:
    """Refuse, before any work, an output path that cannot become a file: a folder, or a path
    below a file. Missing folders are fine (they are created)."""
    path = Path(path)
    if path.is_dir():
        raise CrossViTError(f"output {path} is a folder, not a file; name a file inside it")
    for folder in path.parents:
        if folder.exists():
            if not folder.is_dir():
                raise CrossViTError(f"cannot write {path}: {folder} is a file, not a folder; choose another output path")
            break


def _write_checked(path: Path, write: Callable[[str], None], check: Callable[[str], float], atol: float) -> float:
    """write(tmp), then check(tmp) -> max difference; keep the file only if it is within atol.
    On failure nothing is left: no file, no temporary, no folder made for it."""
    result = {}

    def write_and_check(tmp: str) -> None:
        write(tmp)
        result["diff"] = diff = check(tmp)
        if not diff <= atol:  # also true for NaN
            raise ExportMismatchError(
                f"{path}: the exported model's outputs differ from the eager model's by {diff:.3g} (more than "
                f"{atol:g}), so the file was not written; try another --opset or --format")

    check_output_path(path)
    made = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]  # deepest first
    try:
        atomic_write(path, write_and_check)
    except BaseException as e:
        for folder in made:  # atomic_write created them for this file; empty again, they go
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(e, OSError):  # e.g. a read-only file system, or a folder that became a file meanwhile
            raise CrossViTError(f"cannot write {path}: {e.strerror or e}") from None
        raise
    return result["diff"]


def _prepare(model: CrossViT) -> CrossViT:
    """Put the model (in place) on the path that is exported: eval mode, fp32 on the CPU, fused attention."""
    model = model.eval().float().cpu()
    model.keep_attention(False)
    return model


def _trace_args(model: CrossViT, batch_size: int) -> dict:
    """Example input and dynamic batch axis for torch.export (which ONNX export also runs)."""
    # At least 2: torch.export specialises a dimension traced at size 1.
    example = random_images(model, max(2, batch_size))
    return {"args": (example,), "dynamic_shapes": ({0: torch.export.Dim("batch", min=1)},)}


def _check_sizes(batch_size: int) -> tuple[int, int]:
    return 1, max(2, batch_size) + 1


def _describe(model: CrossViT) -> dict[str, str]:
    record = model_record(model)
    return {"crossvit.config": json.dumps(record["config"]), "crossvit.meta": json.dumps(record["meta"])}


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """Errors only from these loggers: the ONNX optimiser reports each of its rewrites at INFO, and
    the outcome that matters here, the numbers, is checked afterwards."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export_onnx(model: CrossViT, path: str | os.PathLike, opset: int | None = None, batch_size: int = 2,
                atol: float = ATOL) -> float:
    """Write `model` as ONNX (input "images", output "logits", dynamic batch axis); return the
    largest difference ONNX Runtime showed against the eager model.

    The torch.export-based exporter (`dynamo=True`), not the TorchScript one: that one is
    deprecated in torch 2.14 and traces the model's input-shape check as a constant, while
    torch.export keeps the batch symbolic; both export the fused attention (SDPA) and the
    bicubic 240 -> 224 resize exactly.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise CrossViTError("ONNX export needs onnx, onnxscript and onnxruntime: pip install 'crossvit[export]'") from None
    model = _prepare(model)
    try:
        with _quiet_loggers("onnxscript", "onnx_ir", "torch.onnx"):
            program = torch.onnx.export(model, **_trace_args(model, batch_size), input_names=["images"],
                                        output_names=["logits"], opset_version=opset, dynamo=True, verbose=False)
    except (torch.onnx.errors.OnnxExporterError, ValueError) as e:
        raise CrossViTError(f"ONNX export to {path} failed{f' at opset {opset}' if opset else ''}: "
                            f"{str(e).strip().splitlines()[0]}") from None
    written = program.model.opset_imports.get("")
    if opset is not None and written != opset:
        # The exporter translates at its own opset and converts down where it can, keeping its own if it cannot.
        raise CrossViTError(f"the ONNX exporter cannot write this model at opset {opset} (it came out at {written}); "
                            f"pass --opset {written} or higher, or leave --opset out")
    program.model.metadata_props.update(_describe(model))

    def check(tmp: str) -> float:
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(tmp, options, providers=["CPUExecutionProvider"])
        return max_difference(model, lambda x: torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0]),
                              _check_sizes(batch_size))

    # One self-contained file: the exporter would put the weights beside it otherwise.
    return _write_checked(Path(path), lambda tmp: program.save(tmp, external_data=False), check, atol)


def export_program(model: CrossViT, path: str | os.PathLike, batch_size: int = 2, atol: float = ATOL) -> float:
    """Write `model` as a torch.export program (.pt2, dynamic batch axis), to be run with
    `torch.export.load(path).module()(images)`; return its largest difference from eager."""
    model = _prepare(model)
    try:
        program = torch.export.export(model, **_trace_args(model, batch_size))
    except Exception as e:  # noqa: BLE001 - torch.export raises many kinds; the user needs one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CrossViTError(f"torch.export of {path} failed: {first}") from None
    extra = {"crossvit.json": json.dumps(model_record(model))}

    # Through file objects: given a path, torch.export insists that it ends in .pt2, and the
    # temporary file's name does not.
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.export.save(program, f, extra_files=extra)

    def check(tmp: str) -> float:
        with open(tmp, "rb") as f:
            loaded = torch.export.load(f).module()
        return max_difference(model, loaded, _check_sizes(batch_size))

    return _write_checked(Path(path), write, check, atol)


def export_safetensors(model: CrossViT, path: str | os.PathLike, atol: float = 0.0) -> float:
    """Write `model` in our own safetensors format (weights, config, preprocessing), e.g. to
    convert the authors' or timm's .pth; return the difference of the reloaded model (0)."""
    from ..model.factory import create_model

    model = _prepare(model)

    def check(tmp: str) -> float:
        return max_difference(model, _prepare(create_model(checkpoint=tmp)), (1, 2))

    # save_checkpoint writes safetensors for any suffix but .pth / .pt, so also for the temporary .tmp.
    return _write_checked(Path(path), lambda tmp: save_checkpoint(model, tmp), check, atol)


def export_hub(model: CrossViT, directory: str | os.PathLike, card: dict | None = None, atol: float = 0.0) -> float:
    """Write `model` in the Hugging Face Hub layout into folder `directory` (save_pretrained:
    config.json, model.safetensors, a README.md model card with `card`'s fields); return the
    difference of the model read back through create_model("local-dir:") (0). The files are
    written and checked in a hidden folder beside it, then moved in over any already there."""
    from ..model.factory import create_model
    from ..model.hub import save_pretrained

    directory = Path(directory)
    check_output_path(directory / "config.json")  # refuses a `directory` that is a file
    model = _prepare(model)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        save_pretrained(model, staging, card)
        diff = max_difference(model, _prepare(create_model(f"local-dir:{staging}")), (1, 2))
        if not diff <= atol:
            raise ExportMismatchError(f"{directory}: the model read back differs by {diff:.3g}, so nothing was written")
        directory.mkdir(exist_ok=True)
        for path in sorted(staging.iterdir()):
            os.replace(path, directory / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return diff


def _say_what_the_file_cannot_carry(model: CrossViT) -> None:
    chans = model.config.branch_chans()
    if len(set(chans)) > 1:
        raise CrossViTError(f"this model takes one batch per branch ({chans} channels), which crossvit export does not "
                            "trace; export it from Python with torch.onnx.export and a list of inputs")
    if getattr(model, "dynamic_img_size", False):
        size = model.config.img_size
        warnings.warn(f"dynamic_img_size does not carry into the exported graph: it takes {size} px images only "
                      "(call model.set_input_size(S) first for another size)", stacklevel=3)


def export(model: CrossViT, path: str | os.PathLike, fmt: str, opset: int | None = None, batch_size: int = 2) -> float:
    """Export in format `fmt` (a key of FORMATS); return the largest difference from eager."""
    if fmt != "safetensors":
        _say_what_the_file_cannot_carry(model)
    if fmt == "onnx":
        return export_onnx(model, path, opset, batch_size)
    if fmt == "torch-export":
        return export_program(model, path, batch_size)
    if fmt == "safetensors":
        return export_safetensors(model, path)
    raise CrossViTError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
