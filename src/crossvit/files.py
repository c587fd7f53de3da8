"""Writing files so that a kill or a full disk never leaves a half-written one behind."""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path
from typing import Callable

from .errors import CrossViTError


def is_disk_full(error: BaseException) -> bool:
    """Whether `error`, or an error it arose from, says the disk (or the user's quota) is full:
    Python's OSError, or safetensors' errors that only carry the system's text. (torch.save, failing
    to write, raises again while closing its archive: the OSError is then the context.)"""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(s in str(error) for s in ("No space left on device", "os error 28", "Disk quota exceeded")):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Call write(tmp_path), then move the finished file over `path` in one step: a kill or a full
    disk during the write leaves `path` as it was (and a full disk is said in one line)."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = str(path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"))
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies, as to any new file
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:  # the rename itself reaches the disk (a power cut then leaves the old file or the new one)
            os.fsync(folder)
        finally:
            os.close(folder)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if is_disk_full(e):
            kept = f"{path.name} keeps its previous contents" if path.exists() else f"{path.name} was not written"
            raise CrossViTError(f"the disk is full: writing {path} failed ({kept}); free some space and run the "
                                "command again (a training run: with --resume)") from None
        raise
