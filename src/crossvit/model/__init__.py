from .config import BranchConfig, CrossViTConfig
from .crossvit import CrossViT
from .fusion import fusion_module
from .registry import ModelMeta, get_variant, list_models

__all__ = ["BranchConfig", "CrossViT", "CrossViTConfig", "ModelMeta", "fusion_module", "get_variant", "list_models"]
