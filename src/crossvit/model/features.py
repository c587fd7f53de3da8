"""A CrossViT as a feature backbone: `create_model(name, features_only=True, out_indices=...)`.

Detection and segmentation heads (torchvision's FeaturePyramidNetwork, say) take a list of
(B, C, H, W) maps with known channels. A CrossViT gives one map per branch after each chosen
multi-scale encoder, each on its branch's own grid (the small-patch branch's is finer).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .crossvit import CrossViT


class CrossViTFeatures(nn.Module):
    """forward(x) -> [maps of encoder out_indices[0]: branch 0, branch 1, ..., then the next encoder].
    `feature_info` describes each map in that order (num_chs, reduction, encoder, branch, module);
    `channels()` and `reductions()` list them as timm's feature_info helpers do."""

    def __init__(self, model: CrossViT, out_indices: int | Sequence[int] | None = None, norm: bool = False) -> None:
        super().__init__()
        self.out_indices = model.prune_intermediate_layers(out_indices, prune_norm=not norm, prune_head=True)
        self.model = model
        self.norm = norm
        self.feature_info = model.features_of(self.out_indices)

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self.feature_info]

    def reductions(self) -> list[float]:
        return [f["reduction"] for f in self.feature_info]

    def forward(self, x: Tensor) -> list[Tensor]:
        outputs = self.model.forward_intermediates(x, self.out_indices, norm=self.norm, intermediates_only=True)
        return [branch_map for encoder_maps in outputs for branch_map in encoder_maps]
