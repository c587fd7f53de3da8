"""`crossvit predict CHECKPOINT IMAGE_OR_FOLDER... [--top-k K] [--json]`: the classes a checkpoint sees."""

from __future__ import annotations

import argparse
import json
import sys

from . import int_at_least


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="top-k classes of images or folders of images")
    p.add_argument("checkpoint", help="a checkpoint (ours; the authors' or timm's with --model)")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files, or folders searched recursively")
    p.add_argument("--top-k", type=int_at_least(1), default=5, help="classes shown per image (default 5)")
    p.add_argument("--batch-size", type=int_at_least(1), default=32, help="images per forward pass (default 32)")
    p.add_argument("--model", help="model name, for checkpoints that do not record their architecture")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..data.folders import IMAGE_EXTENSIONS
    from ..errors import CrossViTError
    from ..inference import gather_images, load_for_inference, predict_paths

    model, names = load_for_inference(args.checkpoint, args.model)
    paths, failures = gather_images(args.inputs)
    if not paths:
        raise CrossViTError(f"no images found in {' '.join(args.inputs)}; give image files or folders holding "
                            f"{', '.join(IMAGE_EXTENSIONS)} files")
    predictions, unreadable = predict_paths(model, paths, args.top_k, args.batch_size, names)
    failures += unreadable
    for failure in failures:
        print(f"crossvit predict: {failure['path']}: {failure['error']}", file=sys.stderr)
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), "predictions": predictions, "failed": failures}, indent=2))
    else:
        width = max(len(p["path"]) for p in predictions) if predictions else 0
        for p in predictions:
            top = "  ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in p["top_k"])
            print(f"{p['path']:<{width}}  {top}")
    return 1 if failures else 0
