from .config import BranchConfig, CrossViTConfig
from .crossvit import CrossViT
from .registry import ModelMeta, get_variant, list_models

__all__ = ["BranchConfig", "CrossViT", "CrossViTConfig", "ModelMeta", "get_variant", "list_models"]
