"""Training throughput of a CrossViT with the paper's full pipeline, on this machine.

Builds a folder of 240 px JPEGs (random pictures: decoding and augmentation cost the same as
for photos), then trains one epoch per setting with the imagenet recipe (RandAugment, random
erasing, mixup/cutmix, label smoothing, drop path, AdamW) and reads the img/s of the epoch from
metrics.jsonl. Also times the bare training step on tensors, without the data pipeline.

    python benchmarks/train_throughput.py --model crossvit_9_240 --batch-size 32 --images 320
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import crossvit
from crossvit.runconfig import load_config
from crossvit.training.engine import autocast
from crossvit.training.trainer import train


def make_folder(root: Path, images: int, size: int = 274) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", images), ("val", 32)):
        for i in range(count):
            folder = root / split / f"class_{i % 4}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.jpg", quality=90)
    return root


def bare_step(model_name: str, batch: int, precision: str, steps: int = 6) -> float:
    model = crossvit.create_model(model_name, drop_path_rate=0.1).train()
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    x, y = torch.randn(batch, 3, 240, 240), torch.randint(0, 1000, (batch,))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        with autocast(torch.device("cpu"), precision):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return batch / sorted(times[1:])[len(times[1:]) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="crossvit_9_240")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = make_folder(Path(tmp) / "data", args.images)
        for precision in ("fp32", "bf16"):
            results.append({"setting": f"bare step, {precision}",
                            "img_per_s": round(bare_step(args.model, args.batch_size, precision), 1)})
            for workers in args.workers:
                run = Path(tmp) / f"run-{precision}-{workers}"
                config = load_config("imagenet", [f"model.name={args.model}", f"data.path={data}", "epochs=1",
                                                  f"data.batch_size={args.batch_size}", f"data.workers={workers}",
                                                  f"train.precision={precision}", "train.threads=2"])
                train(config, run)
                record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
                results.append({"setting": f"full pipeline, {precision}, {workers} loader workers",
                                "img_per_s": round(record["img_per_s"], 1)})
    print(f"\n{args.model}, batch {args.batch_size}, {torch.get_num_threads()} threads")
    for r in results:
        print(f"  {r['setting']:<40} {r['img_per_s']:>7} img/s")


if __name__ == "__main__":
    main()
