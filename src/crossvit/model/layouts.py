"""State-dict layouts: the authors' release and timm name CrossViT's tensors differently from us.

Ours                                     authors' release (timm: pos_embed_0, cls_token_0)
tokenizers.{i}.proj...                   patch_embed.{i}.proj...
cls_tokens.{i} / pos_embeds.{i}          cls_token.{i} / pos_embed.{i}
encoders.{k}.branches.{i}.{j}...         blocks.{k}.blocks.{i}.{j}...
encoders.{k}.fusion.project.{i}.{0,2}    blocks.{k}.projs.{i}.{0,2}
encoders.{k}.fusion.attend.{i}.{l}.q     blocks.{k}.fusion.{i}.attn.wq   (also k, v, proj; norm <- norm1)
encoders.{k}.fusion.revert.{i}.{0,2}     blocks.{k}.revert_projs.{i}.{0,2}
norms.{i} / heads.{i}                    norm.{i} / head.{i}
"""

from __future__ import annotations

import re
from typing import Mapping, TypeVar

T = TypeVar("T")

WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile

_FOREIGN_TO_OURS = [
    (r"^pos_embed[._](\d+)$", r"pos_embeds.\1"),
    (r"^cls_token[._](\d+)$", r"cls_tokens.\1"),
    (r"^patch_embed\.(\d+)\.", r"tokenizers.\1."),
    (r"^blocks\.(\d+)\.blocks\.", r"encoders.\1.branches."),
    (r"^blocks\.(\d+)\.projs\.", r"encoders.\1.fusion.project."),
    (r"^blocks\.(\d+)\.revert_projs\.", r"encoders.\1.fusion.revert."),
    # One fusion layer is stored without a layer index; several with one.
    (r"^blocks\.(\d+)\.fusion\.(\d+)\.(norm1|attn)", r"encoders.\1.fusion.attend.\2.0.\3"),
    (r"^blocks\.(\d+)\.fusion\.(\d+)\.(\d+)\.", r"encoders.\1.fusion.attend.\2.\3."),
    (r"^norm\.(\d+)\.", r"norms.\1."),
    (r"^head\.(\d+)\.", r"heads.\1."),
]
# Inside a fusion's cross-attention layer only.
_FUSION_ATTENTION_TO_OURS = [
    (r"\.norm1\.", r".norm."),
    (r"\.attn\.w([qkv])\.", r".\1."),
    (r"\.attn\.proj\.", r".proj."),
]


def strip_wrappers(state: Mapping[str, T]) -> dict[str, T]:
    """Drop the `module.` / `_orig_mod.` prefixes that DDP and torch.compile add."""
    out = {}
    for key, value in state.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def layout_of(state: Mapping[str, object]) -> str:
    """'official', 'timm' or 'crossvit' (ours), judged by the names of the embeddings."""
    keys = set(state)
    if any(k.startswith(("pos_embed_", "cls_token_")) for k in keys):
        return "timm"
    if any(k.startswith(("patch_embed.", "blocks.")) for k in keys):
        return "official"
    return "crossvit"


def foreign_key_to_ours(key: str) -> str:
    """Rename one key of the authors' (or timm's) layout to ours."""
    in_fusion = re.match(r"^blocks\.\d+\.fusion\.", key) is not None
    for pattern, replacement in _FOREIGN_TO_OURS + (_FUSION_ATTENTION_TO_OURS if in_fusion else []):
        key = re.sub(pattern, replacement, key)
    return key


def to_our_layout(state: Mapping[str, T]) -> dict[str, T]:
    state = strip_wrappers(state)
    if layout_of(state) == "crossvit":
        return dict(state)
    return {foreign_key_to_ours(k): v for k, v in state.items()}
