"""CrossViT: dual-branch multi-scale vision transformers with cross-attention fusion.

    import crossvit
    crossvit.list_models("crossvit_9*")
    model = crossvit.create_model("crossvit_9_240", pretrained=True)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The names below load on first use, not with the package: `crossvit --help`, and a command with a wrong
# argument, then answer at once instead of after the seconds torch takes to import.
_HOMES = {
    "CheckpointError": ".errors", "CrossViTError": ".errors",
    "BranchConfig": ".model", "CrossViT": ".model", "CrossViTConfig": ".model", "ModelMeta": ".model",
    "fusion_module": ".model", "get_variant": ".model", "list_models": ".model",
    "LoadReport": ".model.checkpoint", "load_checkpoint": ".model.checkpoint", "read_checkpoint": ".model.checkpoint",
    "save_checkpoint": ".model.checkpoint",
    "create_model": ".model.factory",
    "save_pretrained": ".model.hub",
}
__all__ = sorted(_HOMES)

if TYPE_CHECKING:  # what type checkers and editors read (F401: they are used through __all__)
    from .errors import CheckpointError, CrossViTError  # noqa: F401
    from .model import (BranchConfig, CrossViT, CrossViTConfig, ModelMeta, fusion_module,  # noqa: F401
                        get_variant, list_models)
    from .model.checkpoint import LoadReport, load_checkpoint, read_checkpoint, save_checkpoint  # noqa: F401
    from .model.factory import create_model  # noqa: F401
    from .model.hub import save_pretrained  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'crossvit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name], __name__), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
