"""The Hugging Face Hub layout, both ways: a directory holding config.json and model.safetensors.

timm's hub copies of CrossViT are such directories (config.json names the architecture and the
preprocessing, the weights are in timm's layout); ours add the full architecture
(`crossvit_config`) and the class names, so a fine-tuned or changed model rebuilds from the
directory alone. `create_model("local-dir:DIR")` and `create_model("hf-hub:ORG/NAME")` read them;
the second downloads through huggingface_hub, which honours HF_HUB_OFFLINE and its cache.
Uploading is huggingface_hub's: `HfApi().upload_folder(folder_path=DIR, repo_id="ORG/NAME")`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from ..errors import CheckpointError
from ..files import atomic_write
from .checkpoint import StoredCheckpoint, read_checkpoint
from .config import CrossViTConfig

CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "model.safetensors", "README.md"
OLD_WEIGHTS_FILE = "pytorch_model.bin"  # what timm's save_for_hf writes by default; read safely (weights only)


def save_pretrained(model, directory: str | os.PathLike, card: dict[str, Any] | None = None) -> Path:
    """Write `model` as DIR/config.json, DIR/model.safetensors and a short model card DIR/README.md.
    `card`: what to say of its training (e.g. dataset, recipe, top1, command); a run's checkpoint
    gives them through `card_from_run`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"architecture": model.meta.name if model.meta else "crossvit_custom",
              "num_classes": model.num_classes, "num_features": model.num_features,
              "pretrained_cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in model.pretrained_cfg.items()},
              "crossvit_config": model.config.to_dict()}
    if model.meta is not None and model.meta.class_names:
        config["label_names"] = list(model.meta.class_names)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    text = json.dumps(config, indent=2)
    atomic_write(directory / CONFIG_FILE, lambda tmp: Path(tmp).write_text(text))
    card_text = _model_card(config, card or {})
    atomic_write(directory / CARD_FILE, lambda tmp: Path(tmp).write_text(card_text))
    return directory


def card_from_run(run_config: dict[str, Any] | None, progress: dict[str, Any] | None = None,
                  command: str | None = None) -> dict[str, Any]:
    """Model-card fields from a training run: its config and progress (as saved in its checkpoints)
    and the command that started it (the first line of its command.txt)."""
    if not run_config:
        return {}
    data, progress = run_config.get("data", {}), progress or {}
    card = {"dataset": data.get("dataset"), "data path": data.get("path"), "recipe": run_config.get("recipe"),
            "epochs trained": progress.get("epoch")}
    best, best_epoch = progress.get("best_top1"), progress.get("best_epoch")
    if best is not None:
        which = "these weights" if best_epoch == progress.get("epoch") else "the run's best"
        card["validation top-1"] = f"{best:.2f}% ({which}, epoch {best_epoch})"
    if command:
        card["command"] = f"`{command}`"
    return {k: v for k, v in card.items() if v is not None}


def _model_card(config: dict[str, Any], card: dict[str, Any]) -> str:
    cfg = config["pretrained_cfg"]
    lines = ["---", "library_name: crossvit", "tags: [image-classification, crossvit, timm]", "---", "",
             f"# {config['architecture']}", "",
             "A CrossViT (Chen, Fan, Panda, ICCV 2021) saved by the `crossvit` library.", "",
             f"- input: {cfg['input_size']}, {cfg.get('interpolation', 'bicubic')} resize, crop {cfg.get('crop_pct')}",
             f"- classes: {config['num_classes']}"]
    lines += [f"- {key}: {value}" for key, value in card.items()]
    lines += ["", "```python", "import crossvit", 'model = crossvit.create_model("local-dir:PATH")  # or "hf-hub:ORG/NAME"',
              "```", ""]
    return "\n".join(lines)


def read_pretrained(directory: str | os.PathLike) -> tuple[str | None, CrossViTConfig | None, dict, StoredCheckpoint]:
    """(architecture name, our full config if saved, config.json, the weights) of a hub-layout directory."""
    directory = Path(directory)
    config_path, weights = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not weights.is_file() and (directory / OLD_WEIGHTS_FILE).is_file():
        weights = directory / OLD_WEIGHTS_FILE
    if not config_path.is_file() or not weights.is_file():
        raise CheckpointError(f"{directory} is not a hub-layout model directory: it needs {CONFIG_FILE} and "
                              f"{WEIGHTS_FILE} (or {OLD_WEIGHTS_FILE}); crossvit.save_pretrained writes them")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_path} is not valid JSON ({e}); restore it or save the model again") from None
    ours = CrossViTConfig.from_dict(config["crossvit_config"]) if "crossvit_config" in config else None
    return config.get("architecture"), ours, config, read_checkpoint(weights)


def download_hub_dir(repo_id: str) -> Path:
    """The local snapshot of a Hub repository's config and weights (downloaded once, cached)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, CARD_FILE]))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        raise CheckpointError(f"could not fetch hf-hub:{repo_id} ({str(e).splitlines()[0][:160]}); offline, download "
                              "it elsewhere and use local-dir:PATH") from None
