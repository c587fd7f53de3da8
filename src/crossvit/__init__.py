"""CrossViT: dual-branch multi-scale vision transformers with cross-attention fusion.

    import crossvit
    crossvit.list_models("crossvit_9*")
    model = crossvit.create_model("crossvit_9_240", pretrained=True)
"""

from .errors import CheckpointError, CrossViTError
from .model import BranchConfig, CrossViT, CrossViTConfig, ModelMeta, fusion_module, get_variant, list_models
from .model.checkpoint import LoadReport, load_checkpoint, read_checkpoint, save_checkpoint
from .model.factory import create_model
from .model.hub import save_pretrained

__version__ = "0.1.0"

__all__ = [
    "BranchConfig", "CheckpointError", "CrossViT", "CrossViTConfig", "CrossViTError", "LoadReport", "ModelMeta",
    "create_model", "fusion_module", "get_variant", "list_models", "load_checkpoint", "read_checkpoint", "save_checkpoint", "save_pretrained",
]
