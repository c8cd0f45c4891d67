"""ONNX Runtime (and TensorRT / torch CUDA FP16 where present) against torch eager, per model.

Prints slices/s per runner and batch size for every model shipped in `engines/`, with the
ratio over torch eager on the same device, all measured in this one run. Before product
models are shipped the zoo is empty; `--tiny` then benchmarks the tiny test network so the
script still shows the comparison.

    python benchmarks/engines.py [--models-dir engines] [--batch 1 8] [--iterations 20] [--tiny]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from dicomnode.engines.bench import bench_model, format_results, speedup
from dicomnode.engines.zoo import scan_zoo

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "engines")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--precision", choices=["fp16", "fp32"], default="fp16")
    parser.add_argument("--tiny", action="store_true", help="also bench the tiny test network")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        entries = scan_zoo(args.models_dir)
        if args.tiny or not entries:
            from dicomnode.engines.tinymodel import write_tiny_model

            print(f"{'no models in ' + str(args.models_dir) + '; ' if not entries else ''}"
                  "including the tiny test network (not a product model)")
            write_tiny_model(Path(tmp) / "zoo")
            entries += scan_zoo(Path(tmp) / "zoo")
        refused = [e for e in entries if not e.ok]
        for entry in refused:
            print(f"refused: {entry.error}", file=sys.stderr)
        results = []
        for entry in entries:
            if entry.ok:
                results += bench_model(
                    entry, args.batch, args.iterations,
                    cache_dir=Path(tmp) / "engine-cache", precision=args.precision,
                )
    print(format_results(results))
    print()
    for r in results:
        ratio = speedup(results, r)
        if r.runner.startswith(("onnxruntime", "tensorrt")) and ratio is not None:
            print(f"{r.model} batch {r.batch_size}: {r.runner} = {ratio:.2f}x torch eager ({r.device})")
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
