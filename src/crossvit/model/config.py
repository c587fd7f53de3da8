"""Architecture description of a CrossViT: plain, frozen, JSON-able dataclasses.

A config says what the network is (branches, encoders, fusion); it says nothing about
weights, preprocessing or published numbers, which live in `registry.ModelMeta`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import CrossViTError

TOKENIZERS = ("linear", "conv3", "shifted", "t2t", "convstem")
FUSIONS = ("cross_attention", "all_attention", "class_token", "pairwise", "none")


@dataclass(frozen=True)
class BranchConfig:
    """One branch: its own patch size, input size, width, depth per encoder and heads."""

    patch_size: int
    img_size: int
    dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    tokenizer: str = "linear"
    in_chans: int | None = None  # channels of this branch's own input (None: the model's in_chans)

    def grid_size(self) -> int:
        """Side of the patch grid this branch produces (the tokenizers keep images square)."""
        if self.tokenizer in ("linear", "shifted"):
            return self.img_size // self.patch_size
        layouts = {"t2t": t2t_layout, "conv3": conv3_layout, "convstem": convstem_layout}
        return layout_grid(self.img_size, layouts[self.tokenizer](self.patch_size))


def layout_grid(size: int, layout: list[tuple[int, int, int]]) -> int:
    """Side of the map left after sliding windows (kernel, stride, padding) over `size` pixels
    one after another (the same arithmetic for convolutions and nn.Unfold)."""
    for kernel, stride, padding in layout:
        size = (size + 2 * padding - kernel) // stride + 1
    return size


def conv3_layout(patch_size: int) -> list[tuple[int, int, int]]:
    """(kernel, stride, padding) of the three convolutions of the dagger tokenizer.

    The paper defines patch 12 and 16; patch 4 and 8 follow the same pattern
    (a 7x7/4 stem, then 3x3 convolutions whose strides make up the rest of the patch).
    """
    rest = {
        4: [(3, 1, 1), (3, 1, 1)],
        8: [(3, 2, 1), (3, 1, 1)],
        12: [(3, 3, 0), (3, 1, 1)],
        16: [(3, 2, 1), (3, 2, 1)],
    }
    if patch_size not in rest:
        raise CrossViTError(
            f"tokenizer 'conv3' supports patch sizes 4, 8, 12 and 16, not {patch_size}; "
            "use tokenizer='linear' for other patch sizes"
        )
    return [(7, 4, 3), *rest[patch_size]]


def convstem_layout(patch_size: int) -> list[tuple[int, int, int]]:
    """(kernel, stride, padding) of the convolutional stem of Xiao et al. ("Early convolutions
    help transformers see better", 2021): one 3x3 stride-2 convolution per halving of the patch."""
    halvings = patch_size.bit_length() - 1
    if patch_size < 2 or patch_size != 1 << halvings:
        raise CrossViTError(f"tokenizer 'convstem' needs a power-of-two patch size (2, 4, 8, 16...), not {patch_size}; "
                            "use tokenizer='linear' for other patch sizes")
    return [(3, 2, 1)] * halvings


def t2t_layout(patch_size: int) -> list[tuple[int, int, int]]:
    """(kernel, stride, padding) of the soft splits of the Tokens-to-Token tokenizer; the
    strides multiply to the patch size.

    16 is T2T-ViT's own layout; the others keep its 7x7 first split where the patch allows it
    (for 4 px patches a 3x3/2 split instead). The paddings make every layout give exactly
    img_size // patch_size tokens per side for the image sizes we use (224 with 16, 240 with
    12, 32 with 4 and 8, 28 with 4 and 14). Patch 12 keeps a third, stride-1 split, so that
    both branches of CrossViT-18+T2T (12 and 16) get T2T-ViT's two token transformer layers.
    """
    layouts = {
        4: [(3, 2, 1), (3, 2, 1)],
        8: [(7, 4, 2), (3, 2, 1)],
        12: [(7, 4, 2), (3, 3, 0), (3, 1, 1)],
        14: [(7, 7, 0), (3, 2, 1)],
        16: [(7, 4, 2), (3, 2, 1), (3, 2, 1)],
    }
    if patch_size not in layouts:
        raise CrossViTError(
            f"tokenizer 't2t' supports patch sizes 4, 8, 12, 14 and 16, not {patch_size}; "
            "use tokenizer='linear' for other patch sizes"
        )
    return list(layouts[patch_size])


@dataclass(frozen=True)
class CrossViTConfig:
    """A whole CrossViT. `img_size` is the size of the images fed to the model; a branch whose
    own `img_size` differs sees a bicubic resize of them (240 -> 224 in the paper)."""

    branches: tuple[BranchConfig, ...]
    img_size: int
    num_encoders: int = 3  # K
    fusion_layers: int = 1  # L
    fusion: str = "cross_attention"
    cls_token: bool = True
    in_chans: int = 3
    num_classes: int = 1000
    qkv_bias: bool = True
    # Locality self-attention (Lee et al. 2021) in the branches' blocks: a learned temperature,
    # and no token attends to itself. Meant for small images trained from scratch.
    locality_attention: bool = False
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    layer_norm_eps: float = field(default=1e-6)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise CrossViTError(message)

        need(len(self.branches) >= 1, "a CrossViT needs at least one branch")
        need(self.fusion in FUSIONS, f"unknown fusion {self.fusion!r}; choose one of {', '.join(FUSIONS)}")
        need(self.num_encoders >= 1, f"num_encoders must be >= 1, got {self.num_encoders}")
        need(self.fusion_layers >= 1, f"fusion_layers must be >= 1, got {self.fusion_layers}")
        need(
            self.fusion_layers == 1 or self.fusion in ("cross_attention", "all_attention"),
            f"fusion_layers={self.fusion_layers} only applies to attention fusions, not {self.fusion!r}",
        )
        need(self.in_chans >= 1, f"in_chans must be >= 1, got {self.in_chans}")
        need(self.num_classes >= 0, f"num_classes must be >= 0, got {self.num_classes}")
        need(self.img_size >= 1, f"img_size must be positive, got {self.img_size}")
        for name in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
            value = getattr(self, name)
            need(0.0 <= value < 1.0, f"{name} must be in [0, 1), got {value}")
        for i, b in enumerate(self.branches):
            need(b.tokenizer in TOKENIZERS, f"branch {i}: unknown tokenizer {b.tokenizer!r}; choose one of {', '.join(TOKENIZERS)}")
            need(b.patch_size >= 1 and b.dim >= 1 and b.num_heads >= 1 and b.depth >= 0 and b.mlp_ratio > 0,
                 f"branch {i}: patch_size, dim, num_heads and mlp_ratio must be positive and depth >= 0: {b}")
            need(b.dim % b.num_heads == 0, f"branch {i}: dim {b.dim} is not divisible by num_heads {b.num_heads}")
            if b.tokenizer == "conv3":
                conv3_layout(b.patch_size)
                need(b.dim % 4 == 0, f"branch {i}: the conv3 tokenizer needs dim divisible by 4, got {b.dim}")
            if b.tokenizer == "t2t":
                t2t_layout(b.patch_size)
            if b.tokenizer == "convstem":
                halvings = len(convstem_layout(b.patch_size))  # widths double up to dim
                need(b.dim % (1 << (halvings - 1)) == 0,
                     f"branch {i}: the convstem tokenizer needs dim divisible by {1 << (halvings - 1)}, got {b.dim}")
            need(b.grid_size() >= 1, f"branch {i}: image size {b.img_size} is smaller than its patch {b.patch_size}")
            need(b.in_chans is None or b.in_chans >= 1, f"branch {i}: in_chans must be >= 1, got {b.in_chans}")

    # -- derived quantities -------------------------------------------------------------

    @property
    def num_branches(self) -> int:
        return len(self.branches)

    def drop_path_rates(self) -> list[list[float]]:
        """Per encoder, the stochastic-depth rates of its block slots.

        Rates rise linearly over K * max(depth) slots (one per block of the deepest
        branch); every branch's j-th block takes slot j of its encoder, and the fusion
        takes the encoder's last slot, as in the released models.
        """
        per_encoder = max(1, max(b.depth for b in self.branches))
        total = self.num_encoders * per_encoder
        rates = [self.drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        return [rates[k * per_encoder:(k + 1) * per_encoder] for k in range(self.num_encoders)]

    # -- changing and serialising -------------------------------------------------------

    def with_img_size(self, img_size: int) -> CrossViTConfig:
        """The same network for another input size; each branch keeps its size ratio, rounded
        to whole patches (240/224 at 240 becomes 408/384 at 408)."""
        branches = []
        for b in self.branches:
            if b.img_size == self.img_size:
                size = img_size
            else:
                size = max(1, round(img_size * b.img_size / self.img_size / b.patch_size)) * b.patch_size
            branches.append(dataclasses.replace(b, img_size=size))
        return dataclasses.replace(self, img_size=img_size, branches=tuple(branches))

    def branch_chans(self) -> list[int]:
        """Input channels of each branch: its own in_chans, else the model's."""
        return [b.in_chans or self.in_chans for b in self.branches]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CrossViTConfig:
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CrossViTError(f"unknown config keys {unknown}; valid keys: {sorted(known)}")
        branch_keys = {f.name for f in dataclasses.fields(BranchConfig)}
        branches = []
        for b in data.pop("branches"):
            extra = sorted(set(b) - branch_keys)
            if extra:
                raise CrossViTError(f"unknown branch config keys {extra}; valid keys: {sorted(branch_keys)}")
            branches.append(BranchConfig(**b))
        return cls(branches=tuple(branches), **data)


# in_chans is a model option that may be given per branch: handled on its own in apply_overrides
BRANCH_FIELDS = tuple(f.name for f in dataclasses.fields(BranchConfig) if f.name != "in_chans")
MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(CrossViTConfig) if f.name != "branches")


def apply_overrides(config: CrossViTConfig, overrides: dict[str, Any]) -> CrossViTConfig:
    """Return `config` with top-level and per-branch fields replaced.

    A branch field takes one value for every branch or a sequence with one value per
    branch: `dim=(192, 384)`, `tokenizer='conv3'`. Sequences of another length change the
    number of branches; new branches copy the last branch's fields that are not given.
    `img_size` rescales every branch.
    """
    overrides = dict(overrides)
    unknown = sorted(set(overrides) - set(BRANCH_FIELDS) - set(MODEL_FIELDS) - {"branches"})
    if unknown:
        raise CrossViTError(
            f"unknown model option(s) {unknown}; valid options: {sorted(set(MODEL_FIELDS) | set(BRANCH_FIELDS))}"
        )
    img_size = overrides.pop("img_size", None)
    chans = overrides.pop("in_chans", None)
    if "branches" in overrides:
        config = dataclasses.replace(config, branches=tuple(overrides.pop("branches")))
    branch_overrides = {k: overrides.pop(k) for k in list(overrides) if k in BRANCH_FIELDS}
    if branch_overrides:
        lengths = {len(v) for v in branch_overrides.values() if isinstance(v, (list, tuple))}
        if len(lengths) > 1:
            raise CrossViTError(f"per-branch options disagree on the number of branches: {branch_overrides}")
        n = lengths.pop() if lengths else config.num_branches
        old = [dataclasses.asdict(b) for b in config.branches]
        branches = [dict(old[min(i, len(old) - 1)]) for i in range(n)]
        for key, value in branch_overrides.items():
            values = list(value) if isinstance(value, (list, tuple)) else [value] * n
            for branch, v in zip(branches, values):
                branch[key] = v
        config = dataclasses.replace(config, branches=tuple(BranchConfig(**b) for b in branches))
    if chans is not None:  # one count for every branch, or one per branch (different inputs)
        per_branch = list(chans) if isinstance(chans, (list, tuple)) else [None] * config.num_branches
        if len(per_branch) != config.num_branches:
            raise CrossViTError(f"in_chans={list(chans)} gives {len(per_branch)} counts for {config.num_branches} branches")
        config = dataclasses.replace(config, in_chans=per_branch[0] or chans, branches=tuple(
            dataclasses.replace(b, in_chans=c) for b, c in zip(config.branches, per_branch)))
    config = dataclasses.replace(config, **overrides)
    if img_size is not None and img_size != config.img_size:
        config = config.with_img_size(int(img_size))
    return config
