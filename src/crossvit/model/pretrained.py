"""Fetching published weights into torch's hub cache (`$TORCH_HOME/hub/checkpoints`)."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import torch

from ..errors import CrossViTError
from .registry import ModelMeta


def _cache_name(url: str) -> str:
    # timm's hub files are all called model.safetensors: name them after their repository.
    if "huggingface.co/" in url:
        repo = url.split("huggingface.co/", 1)[1].split("/resolve/", 1)[0]
        return repo.replace("/", "--") + ".safetensors"
    return url.rstrip("/").rsplit("/", 1)[-1]


def download_weights(meta: ModelMeta, url: str | None = None, progress: bool = False) -> Path:
    """Path of the cached weights of `meta` (or of `url`), downloading them when missing.

    The authors' release is tried first, then timm's copy. Offline, the error names every
    place tried and how to provide the file by hand.
    """
    urls = [url] if url else meta.urls
    if not urls:
        raise CrossViTError(f"model {meta.name} has no published weights; pass checkpoint=PATH instead")
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    failures = []
    for candidate in urls:
        dest = cache / _cache_name(candidate)
        if dest.is_file() and dest.stat().st_size > 0:
            return dest
        try:
            torch.hub.download_url_to_file(candidate, str(dest), progress=progress)
            return dest
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            failures.append(f"{candidate} ({reason})")
    raise CrossViTError(
        f"could not download the weights of {meta.name} (offline?): tried {'; '.join(failures)}; "
        f"download the file elsewhere and pass checkpoint=PATH, or copy it to {cache / _cache_name(urls[0])}"
    )
