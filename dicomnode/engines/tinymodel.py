"""A tiny convolutional model written out as a complete zoo folder, for tests and smoke benchmarks.

It is not a product model and never goes into the shipped zoo: it exists so the engine
layer can be exercised end to end (export, checksum, manifest, backends, torch parity)
without any trained weights. Needs torch and onnx (the test extra).
"""

from __future__ import annotations

import importlib
import warnings
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from dicomnode.engines.manifest import file_sha256


def TinyNet() -> Any:
    """A residual two-layer CNN with two outputs: the image and a per-slice score."""
    torch = importlib.import_module("torch")

    class _TinyNet(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
            self.conv2 = torch.nn.Conv2d(8, 1, 3, padding=1)

        def forward(self, image: Any) -> tuple[Any, Any]:
            residual = self.conv2(torch.relu(self.conv1(image)))
            return image + residual, residual.abs().mean(dim=(1, 2, 3))

    return _TinyNet()


def write_tiny_model(
    directory: Path,
    *,
    name: str = "tiny",
    seed: int = 0,
    fixed_batch: int | None = None,
) -> Path:
    """Create `directory/name` with model.onnx, model.pt, manifest.yaml and card.md."""
    torch = importlib.import_module("torch")
    torch.manual_seed(seed)
    model = TinyNet().eval()
    folder = directory / name
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "model.pt")
    batch_dim: int | str = fixed_batch if fixed_batch is not None else "batch"
    dynamic_axes: dict[str, dict[int, str]] = {
        "image": {2: "height", 3: "width"},
        "output": {2: "height", 3: "width"},
    }
    if fixed_batch is None:
        for axes in dynamic_axes.values():
            axes[0] = "batch"
        dynamic_axes["score"] = {0: "batch"}
    example = torch.zeros(fixed_batch or 2, 1, 32, 32)
    with warnings.catch_warnings():
        # The TorchScript exporter needs no onnxscript; its deprecation notice is noise here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(folder / "model.onnx"),
            input_names=["image"], output_names=["output", "score"],
            dynamic_axes=dynamic_axes, opset_version=17, dynamo=False,
        )
    dims = {"height": {"min": 8, "opt": 64, "max": 512}, "width": {"min": 8, "opt": 64, "max": 512}}
    if fixed_batch is None:
        dims["batch"] = {"min": 1, "opt": 8, "max": 64}
    manifest = {
        "name": name,
        "version": "0.0.1",
        "task": "test: image-to-image with a per-slice score",
        "sha256": file_sha256(folder / "model.onnx"),
        "inputs": [{"name": "image", "dtype": "float32", "layout": "NCHW",
                    "shape": [batch_dim, 1, "height", "width"]}],
        "outputs": [
            {"name": "output", "dtype": "float32", "layout": "NCHW",
             "shape": [batch_dim, 1, "height", "width"]},
            {"name": "score", "dtype": "float32", "layout": "N", "shape": [batch_dim]},
        ],
        "dynamic_dims": dims,
        "preprocessing": {"hu_window": [-40, 120], "normalize": "unit"},
        "training": {"command": "none: random initial weights", "seed": seed,
                     "data": "none", "date": date.today().isoformat()},
        "torch_module": "dicomnode.engines.tinymodel:TinyNet",
        "torch_weights": "model.pt",
    }
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    (folder / "card.md").write_text(
        f"# {name}\n\nA tiny untrained network for testing the engine layer. "
        "Not for diagnosis; not for any clinical use.\n"
    )
    return folder
