"""The run config shared by `crossvit train`, `eval` and the other commands.

A recipe is a YAML file (see `crossvit/configs/`), optionally naming a `base:` recipe that it
changes; `KEY=VALUE` arguments change any dotted key. Every key and value is checked here, so
that a typo is one line naming the key and the valid choices, not a failure an hour later.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import CrossViTError, first_line
from .files import atomic_write

RECIPES_DIR = Path(__file__).resolve().parent / "configs"


def setting(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None,
            choices: tuple[str, ...] = (), at_least: float | None = None, above: float | None = None,
            fraction: bool = False, check: Callable[[str, Any, Any], Any] | None = None) -> Any:
    """A config field with its valid values beside it: `choices`; a lower bound that may be reached
    (`at_least`) or not (`above`); `fraction`: between 0 and 1; `check(key, given, value)` for the
    rest, which returns the value to keep. A value left null passes the bounds."""
    rules = {"choices": choices, "at_least": at_least, "above": above, "fraction": fraction, "check": check}
    if factory is not None:
        return field(default_factory=factory, metadata=rules)
    return field(default=default, metadata=rules)


def _at_most_one(key: str, given: Any, value: float) -> float:
    if value is not None and value > 1:
        raise CrossViTError(f"{key}={given!r} must be at most 1 (1: no decay), e.g. 0.75")
    return value


def _momentum_below_one(key: str, given: Any, value: float) -> float:
    if value >= 1:
        raise CrossViTError(f"{key}={given!r} must be below 1, e.g. 0.9")
    return value


def _betas(key: str, given: Any, value: tuple[float, float]) -> tuple[float, float]:
    if not all(0 <= b < 1 for b in value):
        raise CrossViTError(f"{key}={given!r}: each beta must be at least 0 and below 1, e.g. [0.9, 0.999]")
    return value


def _crop_scale(key: str, given: Any, value: tuple[float, float]) -> tuple[float, float]:
    if not 0 < value[0] <= value[1] <= 1:
        raise CrossViTError(f"{key}={given!r}: the smallest and largest share of the image a crop keeps, "
                            "0 < min <= max <= 1, e.g. [0.08, 1.0]")
    return value


def _randaugment(key: str, given: Any, spec: str | None) -> str | None:
    """timm parses the spec only when the dataset is built, and fails with a bare AssertionError."""
    if spec is None:
        return None
    from timm.data.auto_augment import rand_augment_transform

    try:
        rand_augment_transform(spec, {"translate_const": 10, "img_mean": (124, 116, 104)})
    except Exception as e:
        detail = f": {str(e).splitlines()[0]}" if str(e).strip() else ""
        raise CrossViTError(f"{key}={spec!r} is not a RandAugment spec that timm reads{detail}; "
                            "e.g. rand-m9-mstd0.5-inc1 (or null for none)") from None
    return spec


def _top1_curve(key: str, given: Any, curve: dict) -> dict[float, float]:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and e > 0 and 0 <= v <= 100
               for e, v in ((_number(e), v) for e, v in curve.items())):
        raise CrossViTError(f"{key}={given!r} maps epochs reached to a top-1 in percent, e.g. {{3.5: 88.9, 10: 90.8}}")
    return {float(e): float(v) for e, v in curve.items()}


def _number(value: Any) -> float:
    """A mapping key read as a number (YAML keeps 3.5 a float, but "3.5" a string); -1 if none."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return -1.0


# Defaults: what a recipe leaves out. The augmentation and optimisation sections default to the
# paper's training method (DeiT's augmentation; AdamW with warm-up and cosine decay), which
# configs/imagenet.yaml spells out; the model, data and length default to the smallest run that
# works anywhere (crossvit_micro_28 on Fashion-MNIST, fp32, loading in-process). The shipped
# recipes set their model, data, augmentation and learning rate and take the rest from here.
# Where a default differs from imagenet.yaml, the field's comment gives the recipe's value.

@dataclass
class ModelSection:
    name: str | None = "crossvit_micro_28"  # None: rebuild from `checkpoint` (one of ours)
    pretrained: bool = False  # the published ImageNet weights
    checkpoint: str | None = None  # start from these weights (ours, the authors' or timm's)
    img_size: int | None = setting(None, at_least=1)  # None: the variant's own
    # Stochastic depth while training: the paper's 0.1. The architecture's own default
    # (CrossViTConfig.drop_path_rate) is 0.0, so that a model built outside a run, for inference
    # or a script's fine-tuning, has none unless asked; a run trains with the paper's rate.
    drop_path_rate: float = setting(0.1, at_least=0, fraction=True)
    freeze_backbone: bool = False  # train the heads only (a linear probe)
    options: dict[str, Any] = setting(factory=dict)  # any create_model option: fusion, depth, ...


@dataclass
class DataSection:
    dataset: str = setting("fashion_mnist", choices=("fashion_mnist", "folder", "cifar10", "cifar100"))
    path: str | None = None  # None: the dataset's default place
    batch_size: int = setting(128, at_least=1)  # global: split over the processes, times accum_steps (imagenet.yaml: 4096 on 32 GPUs)
    eval_batch_size: int | None = setting(None, at_least=1)  # global; None: twice batch_size (a run saves which)
    workers: int = setting(0, at_least=0)  # loader processes per training process (imagenet.yaml: 8)
    strict: bool = False  # an unreadable image stops the run instead of being skipped
    limit_train: int | None = setting(None, at_least=1)  # use only the first N (shuffled once) training images
    limit_val: int | None = setting(None, at_least=1)


@dataclass
class AugSection:
    # rrc: random resized crop (the paper's) | pad: pad-and-crop for tiny images | none
    crop: str = setting("rrc", choices=("rrc", "pad", "none"))
    scale: tuple[float, float] = setting((0.08, 1.0), check=_crop_scale)  # rrc area range
    hflip: float = setting(0.5, fraction=True)
    randaugment: str | None = setting("rand-m9-mstd0.5-inc1", check=_randaugment)  # timm's RandAugment spec
    random_erasing: float = setting(0.25, fraction=True)
    mixup: float = setting(0.8, at_least=0)  # a Beta distribution's alpha, not a probability
    cutmix: float = setting(1.0, at_least=0)
    mixup_switch_prob: float = setting(0.5, fraction=True)
    smoothing: float = setting(0.1, fraction=True)
    # Repeated augmentation: each image this many times per epoch (3 for CrossViT-18)
    repeated: int = setting(1, at_least=1)


@dataclass
class OptimSection:
    name: str = setting("adamw", choices=("adamw", "sgd"))
    lr: float = setting(5e-4, above=0)  # at a global batch of lr_base_batch, scaled linearly (0 base batch: absolute)
    lr_base_batch: int = setting(512, at_least=0)
    # lr at this run's global batch: worked out by the run (a value given here is replaced) and saved
    # in its config.yaml, so that the file tells the rate the optimizer used.
    effective_lr: float | None = setting(None, above=0)
    weight_decay: float = setting(0.05, at_least=0)  # never on norms, biases, CLS tokens, position embeddings
    momentum: float = setting(0.9, at_least=0, check=_momentum_below_one)  # sgd only
    betas: tuple[float, float] = setting((0.9, 0.999), check=_betas)  # adamw only
    clip_grad: float | None = setting(None, above=0)  # max gradient norm
    # Layer-wise lr decay: a parameter at depth d of D (model.layer_depth) learns at lr * decay^(D - d);
    # null or 1.0: one rate for all, as without it. 0.75 is the usual choice for fine-tuning ViTs.
    layer_decay: float | None = setting(None, above=0, check=_at_most_one)
    accum_steps: int = setting(1, at_least=1)
    # The authors' advice for a global batch near 1024; imagenet.yaml's 30 goes with its batch of 4096.
    warmup_epochs: float = setting(5.0, at_least=0)
    warmup_lr: float = setting(1e-6, at_least=0)
    min_lr: float = setting(1e-5, at_least=0)


@dataclass
class TrainSection:
    device: str = setting("auto", choices=("auto", "cpu", "cuda"))
    # fp32 | bf16 | fp16 (fp16: GPU only, with loss scaling) | auto (bf16 where the device runs it
    # natively, else fp32; the saved config holds what was chosen). fp32, exact everywhere, unless
    # a recipe chooses (imagenet.yaml: bf16, for its GPUs).
    precision: str = setting("fp32", choices=("fp32", "bf16", "fp16", "auto"))
    ema: float | None = setting(None, fraction=True)  # decay of an exponential moving average of the weights
    grad_checkpointing: bool = False
    compile: bool = False
    # CPU threads per process (None: the usable cores shared among torchrun's local processes)
    threads: int | None = setting(None, at_least=1)
    eval_every: int = setting(1, at_least=1)  # epochs
    # TensorBoard event files in OUTPUT/tensorboard: auto (when the package is installed) | true | false
    tensorboard: str = setting("auto", choices=("auto", "true", "false"))
    # Minutes of training (steps and data loading; evaluation not counted). The lr schedule then
    # follows the clock or the steps, whichever is further along, and the run ends when the minutes
    # are spent or after `epochs`, whichever comes first.
    time_limit: float | None = setting(None, above=0)
    checkpoint_minutes: float = setting(10.0, above=0)  # also save mid-epoch this often (imagenet.yaml: 20)
    log_every: int = setting(20, at_least=1)  # steps between progress-bar refreshes


@dataclass
class RunConfig:
    recipe: str | None = None  # the recipe the run was built from (load_config fills it in)
    epochs: int = setting(10, at_least=1)  # imagenet.yaml: the paper's 300
    seed: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    aug: AugSection = field(default_factory=AugSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    # Time-limited recipes: the test top-1 that measured runs ended with, by epochs reached within
    # train.time_limit ({epochs: top1}); a run prints what to expect on its machine (expectation.py).
    expected_top1: dict[float, float] = setting(factory=dict, check=_top1_curve)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- reading recipes ----------------------------------------------------------------------

def recipe_path(recipe: str) -> Path:
    """A recipe file's path, given the path itself or a recipe's name."""
    return named_yaml(recipe, RECIPES_DIR, "recipe")


def named_yaml(name: str, folder: Path, kind: str) -> Path:
    """`name` if it is a file, else folder/name.yaml; a one-line error lists the names there."""
    path = Path(name)
    if path.is_file():
        return path
    named = folder / f"{name}.yaml"
    if named.is_file():
        return named
    known = sorted(p.stem for p in folder.glob("*.yaml"))
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise CrossViTError(f"no {kind} {name!r}: not a file, nor a name in {folder}; {hint}{kind}s: {', '.join(known)}")


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in seen:
        raise CrossViTError(f"recipe {path} names itself as a base, through {' -> '.join(map(str, seen))}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise CrossViTError(f"recipe {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise CrossViTError(f"recipe {path} must hold a mapping of keys, not {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
    if not base_path.suffix:
        base_path = base_path.with_suffix(".yaml")
    if not base_path.is_file():
        raise CrossViTError(f"recipe {path} names base: {base}, but {base_path} does not exist")
    return _merge(_read_yaml(base_path, (*seen, path)), data)


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "options":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(recipe: str | None = None, overrides: list[str] | None = None,
                data: dict[str, Any] | None = None) -> RunConfig:
    """A checked RunConfig from a recipe (or a dict, e.g. a saved run's), then KEY=VALUE changes."""
    if data is not None and not isinstance(data, dict):
        raise CrossViTError(f"a run config must be a mapping of keys, not {type(data).__name__}")
    raw = dict(data or {})
    if recipe is not None:
        path = recipe_path(recipe)
        raw = _read_yaml(path)
        raw.setdefault("recipe", path.stem)  # a saved run's config.yaml keeps the recipe it names
    for item in overrides or []:
        key, value = _parse_override(item)
        if not all(key.split(".")):
            raise CrossViTError(f"argument {item!r} has no key (or an empty part of one) before '='; "
                                "keys look like epochs or optim.lr")
        target = raw
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise CrossViTError(f"option {key!r}: {part!r} is not a section")
        target[leaf] = value
    return from_dict(raw)


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise CrossViTError(f"argument {item!r} is not KEY=VALUE (e.g. epochs=5 optim.lr=1e-3)")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        value = text
    return key.strip(), value


# -- checking -----------------------------------------------------------------------------

def from_dict(raw: dict[str, Any]) -> RunConfig:
    config = _build(RunConfig, raw, "")
    _check_model(config.model)
    return config


# create_model arguments that the trainer sets from other keys; in model.options they would clash.
_SET_ELSEWHERE = {"num_classes": "the dataset's class count", "drop_path_rate": "model.drop_path_rate",
                  "pretrained": "model.pretrained", "checkpoint": "model.checkpoint"}


def _check_model(m: ModelSection) -> None:
    """The model section as a whole, before any data is read: a known name, options that fit it."""
    from .model.config import apply_overrides  # here, not at the top: `crossvit --help` need not load torch
    from .model.registry import get_variant, list_models

    if m.name is None:
        if m.checkpoint is None:
            raise CrossViTError("model.name is empty and there is no model.checkpoint to rebuild from: "
                                "set model.name (`crossvit models` lists them) or model.checkpoint=FILE")
        return
    try:
        variant = get_variant(m.name)
    except CrossViTError:
        names = list_models()
        close = difflib.get_close_matches(m.name, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise CrossViTError(f"unknown model {m.name!r} in model.name; {hint}choose one of {', '.join(names)}") from None
    clash = sorted(set(m.options) & set(_SET_ELSEWHERE))
    if clash:
        raise CrossViTError(f"model.options.{clash[0]} cannot be set there: it comes from {_SET_ELSEWHERE[clash[0]]}")
    options = {k: v for k, v in m.options.items() if k != "pretrained_url"}  # a create_model argument, no field
    options.update({"img_size": m.img_size} if m.img_size is not None else {})
    try:
        apply_overrides(variant.config, options)
    except (CrossViTError, TypeError, ValueError) as e:  # BranchConfig's own checks, or a value of the wrong type
        given = [f"model.options={m.options!r}"] if m.options else []
        given += [f"model.img_size={m.img_size}"] if m.img_size is not None else []
        reason = first_line(e)
        raise CrossViTError(f"{' with '.join(given)} does not fit {m.name}: {reason}") from None


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise CrossViTError(f"{prefix.rstrip('.') or 'config'} must be a section of keys, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=2)
            hint = f"did you mean {' or '.join(prefix + c for c in close)}? " if close else ""
            raise CrossViTError(f"unknown config key {prefix + key!r}; {hint}valid keys here: "
                                f"{', '.join(prefix + f for f in fields)}")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        key, hint = prefix + name, hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, raw[name], key + ".")
        else:
            values[name] = _check_value(key, raw[name], hint, f.metadata)
    return cls(**values)


def _check_value(key: str, given: Any, hint: Any, rules: Mapping[str, Any]) -> Any:
    """`given` as the field's type, within the field's rules (see `setting`)."""
    choices = rules.get("choices")
    if isinstance(given, bool) and choices and str(given).lower() in choices:  # YAML reads true/false as booleans
        given = str(given).lower()
    value = _coerce(key, given, hint)
    choices, at_least, above, check = (rules.get(name) for name in ("choices", "at_least", "above", "check"))
    if choices and value not in choices:
        raise CrossViTError(f"{key}={given!r} is not one of {', '.join(choices)}")
    if value is not None:
        if at_least is not None and value < at_least:
            raise CrossViTError(f"{key}={given!r} must be >= {at_least}")
        if above is not None and value <= above:
            raise CrossViTError(f"{key}={given!r} must be > {above}")
        if rules.get("fraction") and not 0 <= value <= 1:
            raise CrossViTError(f"{key}={given!r} must be between 0 and 1")
    return check(key, given, value) if check else value


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """`value` as the annotated type, or a one-line error naming the key."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if value is None and hint in (int, float, str, bool):
        kind = {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}[hint]
        raise CrossViTError(f"{key} needs a value ({kind}); it cannot be left empty or null")
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise CrossViTError(f"{key} takes {len(args)} values like [0.08, 1.0], got {value!r}")
        return tuple(_coerce(key, v, a) for v, a in zip(value, args))
    if origin is dict:
        if not isinstance(value, dict):
            raise CrossViTError(f"{key} takes a mapping like {{fusion: pairwise}}, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):  # NaN slips past every `<` bound, and torch refuses it later
                raise CrossViTError(f"{key}={value!r} must be a finite number")
            return number
    elif hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        return value
    # YAML reads yes/no/on/off as booleans: say so, or "aug.hflip=True" puzzles whoever typed yes.
    note = " (yes, no, on, off, true and false are booleans here)" if isinstance(value, bool) else ""
    raise CrossViTError(f"{key}={value!r} is not a valid {getattr(hint, '__name__', hint)}{note}")


def save_config(config: RunConfig, path: Path) -> None:
    text = yaml.safe_dump(_plain(config.to_dict()), sort_keys=False)
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text))


def _plain(value: Any) -> Any:
    """Tuples to lists, so that the YAML is readable by safe_load."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
