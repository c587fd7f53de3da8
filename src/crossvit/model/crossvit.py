"""The CrossViT network: several branches of transformer blocks over patches of different
sizes, fused after each of K multi-scale encoders, each with its own classifier head whose
logits are averaged."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

if TYPE_CHECKING:
    from .registry import ModelMeta

from ..errors import CrossViTError
from .checkpoint import resample_pos_embed
from .config import CrossViTConfig
from .fusion import build_fusion
from .fastpaths import Linear, bf16_twin, forget_bf16_twin, forget_packed_weights, run_in_bf16
from .layers import Block, Tokenizer, init_weights, layer_norm


class MultiScaleEncoder(nn.Module):
    """One encoder: each branch runs its own blocks, then the fusion mixes the branches."""

    def __init__(self, config: CrossViTConfig, drop_path_rates: list[float]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*(
                Block(b.dim, b.num_heads, b.mlp_ratio, config.qkv_bias, config.drop_rate,
                      config.attn_drop_rate, drop_path_rates[j], config.layer_norm_eps, config.locality_attention)
                for j in range(b.depth)
            ))
            for b in config.branches
        )
        self.fusion = build_fusion(config, drop_path_rates[-1])
        # Without CLS tokens the mean patch token stands in for it during fusion (paper §4.5).
        self.mean_agent = not config.cls_token and config.fusion != "none"

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        xs = [blocks(x) for blocks, x in zip(self.branches, xs)]
        if not self.mean_agent:
            return self.fusion(xs)
        xs = self.fusion([torch.cat([x.mean(1, keepdim=True), x], dim=1) for x in xs])
        # The fused agent becomes the new mean of the patch tokens.
        return [x[:, 1:] + (x[:, :1] - x[:, 1:].mean(1, keepdim=True)) for x in xs]


class CrossViT(nn.Module):
    """CrossViT (Chen, Fan, Panda, ICCV 2021) for any number of branches and any fusion.

    `forward_features` returns the normalised token tensors of every branch,
    `forward_head` turns them into averaged logits (or the concatenated pooled features),
    `branch_logits` gives each branch's head alone.
    """

    def __init__(self, config: CrossViTConfig) -> None:
        super().__init__()
        self.config = config
        self.meta: ModelMeta | None = None  # preprocessing and provenance, set by create_model
        self.num_classes = config.num_classes
        self.num_features = sum(b.dim for b in config.branches)
        self.grad_checkpointing = False
        # any square input size the patches divide, position embeddings resampled per forward
        self.dynamic_img_size = False
        self.bf16_twin_enabled = True  # bf16-autocast inference runs a bf16 copy (fastpaths/twin.py)
        self.grids = [b.grid_size() for b in config.branches]
        extra = 1 if config.cls_token else 0

        self.tokenizers = nn.ModuleList(
            Tokenizer(b.tokenizer, b.patch_size, chans, b.dim) for b, chans in zip(config.branches, config.branch_chans())
        )
        self.cls_tokens = nn.ParameterList(
            nn.Parameter(torch.zeros(1, 1, b.dim)) for b in config.branches if config.cls_token
        )
        self.pos_embeds = nn.ParameterList(
            nn.Parameter(torch.zeros(1, extra + g * g, b.dim)) for b, g in zip(config.branches, self.grids)
        )
        self.pos_drop = nn.Dropout(config.drop_rate)
        self.encoders = nn.ModuleList(MultiScaleEncoder(config, rates) for rates in config.drop_path_rates())
        self.norms = nn.ModuleList(layer_norm(b.dim, config.layer_norm_eps) for b in config.branches)
        self.head_drop = nn.Dropout(config.drop_rate)
        self.heads = nn.ModuleList(self._new_head(b.dim, config.num_classes) for b in config.branches)
        self.feature_info = self.features_of()  # timm's attribute: one entry per encoder and branch

        for p in [*self.cls_tokens, *self.pos_embeds]:
            nn.init.trunc_normal_(p, std=0.02)
        self.apply(init_weights)

    # -- timm-style interface -----------------------------------------------------------

    def train(self, mode: bool = True) -> CrossViT:
        forget_packed_weights(self)  # weights may have changed unseen since the last inference
        forget_bf16_twin(self)
        return super().train(mode)

    @property
    def pretrained_cfg(self) -> dict:
        """The preprocessing metadata in timm's form: timm.data.resolve_model_data_config(model)
        and create_transform(**config) then build what `crossvit eval` and `predict` use."""
        meta = self.meta
        size = (self.config.in_chans, self.config.img_size, self.config.img_size)
        cfg = {"input_size": size, "num_classes": self.num_classes, "crop_mode": "center",
               "first_conv": [f"tokenizers.{i}" for i in range(len(self.tokenizers))],
               "classifier": [f"heads.{i}" for i in range(len(self.heads))]}
        if meta is not None:
            cfg.update(interpolation=meta.interpolation, mean=meta.mean, std=meta.std, crop_pct=meta.crop_pct,
                       hf_hub_id=meta.hf_hub_id, architecture=meta.name)
        return cfg

    default_cfg = pretrained_cfg  # timm's older name

    def no_weight_decay(self) -> set[str]:
        """Parameter names to keep out of weight decay besides norms and biases."""
        return {name for name, _ in self.named_parameters() if name.startswith(("cls_tokens.", "pos_embeds."))}

    def layer_depth(self, name: str, coarse: bool = False) -> int:
        """How deep parameter `name` sits, for layer-wise learning-rate decay: tokenizers, CLS
        tokens and position embeddings 0; in encoder k, block j of every branch at the encoders
        before it plus j + 1, its fusion one past its deepest branch; the final norms and heads
        on top. `coarse`: one depth per encoder."""
        parts = name.split(".")
        if parts[0] != "encoders":
            return 0 if parts[0] in ("tokenizers", "cls_tokens", "pos_embeds") else self._top_depth(coarse)
        k = int(parts[1])
        if coarse:
            return k + 1
        before = sum(self._encoder_span(i) for i in range(k))
        if parts[2] == "branches":
            return before + int(parts[4]) + 1
        return before + self._encoder_span(k)  # the fusion, after the encoder's deepest branch

    def _encoder_span(self, k: int) -> int:
        """Depths one encoder spans: its deepest branch's blocks, then the fusion."""
        return max(len(blocks) for blocks in self.encoders[k].branches) + 1

    def _top_depth(self, coarse: bool) -> int:
        return len(self.encoders) + 1 if coarse else sum(self._encoder_span(k) for k in range(len(self.encoders))) + 1

    def group_matcher(self, coarse: bool = False):
        """timm's hook for grouping parameters by depth (timm.optim's layer_decay reads it)."""
        return lambda name: self.layer_depth(name, coarse)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each encoder in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    def keep_attention(self, enable: bool | str = True) -> None:
        """Make every attention layer compute its weights explicitly and keep the last ones in
        its `.attention` (B, heads, queries, keys): the self-attention of each block
        (`encoders[k].branches[b][j].attn`) and the fusion's (`encoders[k].fusion`). True keeps
        them detached (for maps); "graph" keeps them in the autograd graph, so that a loss on them
        (attention supervision) trains the model."""
        if enable not in (True, False, "graph"):
            raise CrossViTError(f"keep_attention takes True, False or 'graph', got {enable!r}")
        self.__dict__["_keeps_attention"] = enable  # the bf16 twin would keep them, not us
        for module in self.modules():
            if hasattr(module, "keep_attention") and not callable(module.keep_attention):
                module.keep_attention = enable
                module.attention = None

    def get_classifier(self) -> nn.ModuleList:
        return self.heads

    def reset_classifier(self, num_classes: int) -> None:
        """New heads for `num_classes` classes (0: no heads, forward returns features)."""
        ref = self.pos_embeds[0]  # the device and dtype the new heads take
        forget_bf16_twin(self)
        self.num_classes = num_classes
        self.heads = nn.ModuleList(
            self._new_head(b.dim, num_classes).to(device=ref.device, dtype=ref.dtype) for b in self.config.branches
        )

    @staticmethod
    def _new_head(dim: int, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        head = Linear(dim, num_classes)
        init_weights(head)
        return head

    # -- forward ------------------------------------------------------------------------

    def check_input(self, x: Tensor) -> CrossViTConfig:
        """The config that `x` runs under: the model's own, or with dynamic_img_size the same
        network at x's (square) size, whose branch sizes each patch must divide."""
        c, size = self.config.in_chans, self.config.img_size
        if len(set(self.config.branch_chans())) > 1:
            raise CrossViTError(f"this model's branches take {self.config.branch_chans()} channels: give a list with "
                                "one batch per branch")
        square = x.ndim == 4 and x.shape[2] == x.shape[3]
        if x.ndim == 4 and x.shape[1] == c and square and (x.shape[2] == size or self.dynamic_img_size):
            return self.config if x.shape[2] == size else self._config_at(x.shape[2])
        raise CrossViTError(
            f"this model takes images of shape (batch, {c}, {size}, {size}), got {tuple(x.shape)}; "
            f"resize the input, or create the model with img_size={x.shape[-1] if x.ndim == 4 else '...'}"
            + ("" if x.ndim != 4 or x.shape[1] == c else f" and in_chans={x.shape[1]}")
            + ("" if not square or x.shape[1] != c else " (or dynamic_img_size=True)")
        )

    def _config_at(self, size: int) -> CrossViTConfig:
        config = self.config.with_img_size(size)
        for i, b in enumerate(config.branches):
            if b.img_size % b.patch_size or b.grid_size() < 1:
                raise CrossViTError(f"{size} px images do not fit branch {i}: its {b.img_size} px view is not a multiple "
                                    f"of its {b.patch_size} px patches; use a size that is, e.g. "
                                    f"{self.config.img_size}")
        return config

    def set_input_size(self, img_size: int) -> None:
        """Take `img_size` inputs from now on: every branch's position embeddings are resampled
        in place (bicubic, each branch keeping its size ratio, as create_model(img_size=...)
        does when it loads weights), so the model equals one created at that size from the
        same weights."""
        config = self._config_at(img_size)
        prefix = 1 if config.cls_token else 0
        with torch.no_grad():
            for i, branch in enumerate(config.branches):
                old = self.pos_embeds[i]
                resampled = resample_pos_embed(old.detach(), prefix, branch.grid_size())
                self.pos_embeds[i] = nn.Parameter(resampled, requires_grad=old.requires_grad)
        self.config = config
        self.grids = [b.grid_size() for b in config.branches]
        self.feature_info = self.features_of()
        if self.meta is not None:
            self.meta = dataclasses.replace(self.meta, input_size=(config.in_chans, img_size, img_size))
        forget_bf16_twin(self)

    def embed(self, x: Tensor | Sequence[Tensor]) -> list[Tensor]:
        """Images -> per-branch token tensors with CLS and position embeddings. `x`: one batch
        that every branch sees (resized to a branch's own size where it differs), or a list with
        one batch per branch (other crops, resolutions, modalities: each with its branch's
        in_chans, at its branch's size or at the model's)."""
        if isinstance(x, (list, tuple)):
            config, images = self.config, self._branch_inputs(x)
        else:
            config = self.check_input(x)
            images = [x] * len(config.branches)
        prefix = 1 if config.cls_token else 0
        xs = []
        for i, (branch, tokenizer, image) in enumerate(zip(config.branches, self.tokenizers, images)):
            if image.shape[-1] != branch.img_size:
                image = F.interpolate(image, size=(branch.img_size, branch.img_size), mode="bicubic",
                                      align_corners=False)
            tokens = tokenizer(image)
            if config.cls_token:
                tokens = torch.cat([self.cls_tokens[i].expand(image.shape[0], -1, -1), tokens], dim=1)
            pos = self.pos_embeds[i]
            if config is not self.config:  # dynamic_img_size: the embeddings resampled for this size
                pos = resample_pos_embed(pos, prefix, branch.grid_size())
            xs.append(self.pos_drop(tokens + pos))
        return xs

    def _branch_inputs(self, xs: Sequence[Tensor]) -> list[Tensor]:
        config = self.config
        if len(xs) != len(config.branches):
            raise CrossViTError(f"this model has {len(config.branches)} branches: give one input per branch, got {len(xs)}")
        for i, (x, branch, chans) in enumerate(zip(xs, config.branches, config.branch_chans())):
            sizes = sorted({branch.img_size, config.img_size})
            if (x.ndim != 4 or x.shape[1] != chans or x.shape[2] != x.shape[3] or x.shape[2] not in sizes
                    or x.shape[0] != xs[0].shape[0]):
                raise CrossViTError(f"branch {i} takes images of shape (batch, {chans}, S, S) with S in {sizes} and the "
                                    f"batch of branch 0, got {tuple(x.shape)}")
        return list(xs)

    def forward_features(self, x: Tensor | Sequence[Tensor]) -> list[Tensor]:
        twin = bf16_twin(self, x)  # bf16 inference: see fastpaths/twin.py
        if twin is not None:
            return run_in_bf16(twin.forward_features, x)
        xs = self.embed(x)
        for encoder in self.encoders:
            if self.grad_checkpointing and torch.is_grad_enabled():
                xs = checkpoint(encoder, xs, use_reentrant=False)
            else:
                xs = encoder(xs)
        return [norm(x) for norm, x in zip(self.norms, xs)]

    # -- intermediate features (timm's convention, per branch) ---------------------------

    def forward_intermediates(self, x: Tensor | Sequence[Tensor], indices: int | Sequence[int] | None = None, norm: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False,
                              return_prefix_tokens: bool = False):
        """The outputs of chosen multi-scale encoders, each a list with one entry per branch: its
        patch tokens as (B, C, H, W) on the branch's grid (output_fmt="NCHW") or (B, H*W, C)
        ("NLC"); with `return_prefix_tokens`, a (patches, cls) pair, cls (B, C) (the mean patch
        token for models without CLS). `indices`: encoder indices (negative from the end), or n for
        the last n (default: all). `norm`: apply the final norms, so that the last encoder's
        entries equal what forward_features computes. Returns the intermediates alone
        (`intermediates_only`), else (forward_features' output, intermediates)."""
        if output_fmt not in ("NCHW", "NLC"):
            raise CrossViTError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        chosen = self._encoder_indices(indices)
        xs = self.embed(x)
        intermediates = []
        for i, encoder in enumerate(self.encoders[:max(chosen) + 1] if intermediates_only else self.encoders):
            xs = encoder(xs)
            if i in chosen:
                intermediates.append([self._branch_output(b, t, norm, output_fmt, return_prefix_tokens)
                                      for b, t in enumerate(xs)])
        if intermediates_only:
            return intermediates
        return [norm_(t) for norm_, t in zip(self.norms, xs)], intermediates

    def _encoder_indices(self, indices: int | Sequence[int] | None) -> list[int]:
        count = len(self.encoders)
        if indices is None:
            return list(range(count))
        if isinstance(indices, int):
            if not 1 <= indices <= count:
                raise CrossViTError(f"indices={indices}: this model has {count} encoders; ask for 1 to {count}")
            return list(range(count - indices, count))
        chosen = []
        for i in indices:
            if not -count <= i < count:
                raise CrossViTError(f"encoder index {i} is out of range: this model has {count} encoders "
                                    f"(0 to {count - 1}, or -{count} to -1)")
            chosen.append(i % count)
        return sorted(set(chosen))

    def _branch_output(self, branch: int, tokens: Tensor, norm: bool, output_fmt: str, prefix: bool):
        if norm:
            tokens = self.norms[branch](tokens)
        cls, patches = (tokens[:, 0], tokens[:, 1:]) if self.config.cls_token else (tokens.mean(1), tokens)
        if output_fmt == "NCHW":
            grid = math.isqrt(patches.shape[1])  # the input's, under dynamic_img_size
            patches = patches.transpose(1, 2).reshape(patches.shape[0], -1, grid, grid)
        return (patches, cls) if prefix else patches

    def prune_intermediate_layers(self, indices: int | Sequence[int] | None = None, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the encoders after the last one `indices` chooses (and the heads, and the final
        norms if asked), for a backbone that only serves forward_intermediates. Returns the kept
        indices."""
        chosen = self._encoder_indices(indices)
        self.encoders = self.encoders[:max(chosen) + 1]
        self.feature_info = self.features_of()
        forget_bf16_twin(self)
        if prune_norm:
            self.norms = nn.ModuleList(nn.Identity() for _ in self.norms)
        if prune_head:
            self.reset_classifier(0)
        return chosen

    def features_of(self, indices: int | Sequence[int] | None = None) -> list[dict]:
        """Channels and reduction (input pixels per patch-grid step) of each output of
        forward_intermediates, encoder by encoder, branch by branch (`feature_info` holds them
        for every encoder)."""
        return [{"encoder": i, "branch": b, "num_chs": branch.dim, "reduction": self.config.img_size / grid,
                 "module": f"encoders.{i}"}
                for i in self._encoder_indices(indices)
                for b, (branch, grid) in enumerate(zip(self.config.branches, self.grids))]

    def pool(self, xs: list[Tensor]) -> list[Tensor]:
        """Each branch's summary vector: its CLS token, or its mean patch token without CLS."""
        return [x[:, 0] if self.config.cls_token else x.mean(1) for x in xs]

    def branch_logits(self, xs: list[Tensor]) -> list[Tensor]:
        """Logits of each branch's head alone (the paper's Table 6 reports them)."""
        return [head(self.head_drop(p)) for head, p in zip(self.heads, self.pool(xs))]

    def forward_head(self, xs: list[Tensor], pre_logits: bool = False) -> Tensor:
        if pre_logits or self.num_classes == 0:
            return torch.cat(self.pool(xs), dim=1)
        return torch.stack(self.branch_logits(xs)).mean(0)

    def forward(self, x: Tensor | Sequence[Tensor]) -> Tensor:
        twin = bf16_twin(self, x)
        if twin is not None:
            return run_in_bf16(twin, x)
        return self.forward_head(self.forward_features(x))
