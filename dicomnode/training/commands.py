"""`dicomnode train`: train a reference model and write its engine folder."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dicomnode.engines.manifest import file_sha256, load_manifest
from dicomnode.errors import DicomNodeError
from dicomnode.phantoms.lesions import kind_probabilities
from dicomnode.phantoms.template import cache_dir
from dicomnode.phantoms.volume import MAX_TURN_DEG

if TYPE_CHECKING:  # torch is only in the [train] extra
    from dicomnode.training.train import TrainConfig

logger = logging.getLogger(__name__)

MODELS = ("anomaly_triage",)


def cmd_train(
    model: str,
    output_dir: Path,
    steps: int,
    seed: int,
    *,
    batch_size: int = 12,
    work_dir: Path | None = None,
    resume: bool = True,
    init: Path | None = None,
    lr: float | None = None,
    subtle_hu: float | None = None,
    mirrored: bool = False,
    huber_hu: float | None = None,
    kind_weights: str | None = None,
    vary_texture: bool = False,
    device: str = "cpu",
    render_workers: int = 0,
    pool_size: int | None = None,
    initial_studies: int | None = None,
    refresh_every: int | None = None,
    healthy_slices: int = 1,
    scanner_matrix_share: float = 0.0,
    extra_pitch: float = 0.0,
    older_subdurals: float = 0.0,
) -> int:
    """Train `model`, then export model.onnx, model.pt, manifest.yaml and card.md to `output_dir`."""
    if model not in MODELS:
        print(f"error: unknown model {model!r}; trainable models: {', '.join(MODELS)}")
        return 2
    try:
        from dicomnode.training.export import export_engine
        from dicomnode.training.train import TrainConfig, train
    except ImportError as exc:
        print(f"error: training needs the [train] extra (pip install 'dicomnode[train]'): {exc}")
        return 2
    try:
        weights = parse_kind_weights(kind_weights) if kind_weights else None
    except ValueError as exc:
        print(f"error: --kind-weights {kind_weights}: {exc}")
        return 2
    if output_dir.name != model:
        # The zoo finds a model by its folder name; refuse before hours of training, not after.
        print(f"error: --out {output_dir}: the folder must be named {model} (e.g. {output_dir / model})")
        return 2
    if healthy_slices < 1:
        print(f"error: --healthy-slices {healthy_slices}: at least 1 slice from each third of the coverage")
        return 2
    if not 0.0 <= scanner_matrix_share <= 1.0:
        print(f"error: --scanner-matrix-share {scanner_matrix_share:g}: a share of studies, from 0 to 1")
        return 2
    if not 0.0 <= extra_pitch <= MAX_TURN_DEG:
        print(f"error: --extra-pitch {extra_pitch:g}: degrees, from 0 to {MAX_TURN_DEG:g}")
        return 2
    if not 0.0 <= older_subdurals <= 1.0:
        print(f"error: --older-subdurals {older_subdurals:g}: a share of subdural studies, from 0 to 1")
        return 2
    if init is not None and not init.is_file():
        print(f"error: --init {init}: no such weights file")
        return 2
    config = TrainConfig(
        init_weights=init, mirrored=mirrored, kind_weights=weights, vary_texture=vary_texture,
        device=device, render_workers=render_workers, healthy_slices=healthy_slices,
        scanner_matrix_share=scanner_matrix_share, extra_pitch_deg=extra_pitch,
        older_subdurals=older_subdurals,
    )
    given = {"pool_size": pool_size, "initial_studies": initial_studies, "refresh_every": refresh_every,
             "lr": lr, "subtle_hu": subtle_hu, "huber_hu": huber_hu}
    for name, value in given.items():
        if value is not None:  # options left out keep TrainConfig's defaults
            setattr(config, name, value)
    # Checkpoints live outside the repository and the node's data folder, which tests clean.
    work = work_dir or cache_dir() / "train" / model
    start = time.monotonic()
    try:
        result = train(work, steps=steps, batch_size=batch_size, seed=seed, config=config, resume=resume)
    except RuntimeError as exc:
        print(f"error: {exc}")
        return 2
    command = (
        f"dicomnode train {model} --steps {steps} --seed {seed} --lr {config.lr:g} "
        f"--batch-size {batch_size} --subtle-hu {config.subtle_hu:g} --huber-hu {config.huber_hu:g}"
        + (f" --kind-weights {format_kind_weights(weights)}" if weights else "")
        + (" --mirrored" if mirrored else "")
        + (" --vary-texture" if vary_texture else "")
        + (f" --healthy-slices {healthy_slices}" if healthy_slices != 1 else "")
        + (f" --scanner-matrix-share {scanner_matrix_share:g}" if scanner_matrix_share else "")
        + (f" --extra-pitch {extra_pitch:g}" if extra_pitch else "")
        + (f" --older-subdurals {older_subdurals:g}" if older_subdurals else "")
        + _pool_options(config, render_workers)
        + (f" --device {device}" if device != "cpu" else "")
        + (f" --init {init}" if init else "") + f" --out {output_dir}"
    )
    continued = None
    if init is not None:
        earlier_command, continued = _provenance(init)
        command = f"{earlier_command} && {command}"
    written = export_engine(result, output_dir, seed=seed, command=command, work_dir=work,
                            continued=continued)
    print(
        f"trained {model} in {time.monotonic() - start:.0f} s "
        f"({steps} steps, {result.studies} phantom studies)"
    )
    for path in written:
        print(f"wrote {path}")
    return 0


def _pool_options(config: TrainConfig, render_workers: int) -> str:
    """The data-stream options of a run that did not use the defaults (the device changes no data)."""
    from dicomnode.training.train import TrainConfig

    default = TrainConfig()
    text = " --render-workers 1" if render_workers else ""  # any N >= 1 renders the same studies
    for flag, value, usual in [("--pool-size", config.pool_size, default.pool_size),
                               ("--initial-studies", config.initial_studies, default.initial_studies),
                               ("--refresh-every", config.refresh_every, default.refresh_every)]:
        if value != usual:
            text += f" {flag} {value}"
    return text


def parse_kind_weights(text: str) -> dict[str, float]:
    """'infarct=3,mass=2' -> {'infarct': 3.0, 'mass': 2.0}; ValueError names what is wrong."""
    weights: dict[str, float] = {}
    for item in text.split(","):
        kind, sep, value = item.strip().partition("=")
        if not sep or not kind:
            raise ValueError(f"expected KIND=WEIGHT, got {item.strip()!r}")
        try:
            weights[kind.strip()] = float(value)
        except ValueError:
            raise ValueError(f"weight of {kind.strip()} is not a number: {value!r}") from None
    kind_probabilities(weights)  # names every unknown kind
    return weights


def format_kind_weights(weights: dict[str, float]) -> str:
    return ",".join(f"{kind}={weight:g}" for kind, weight in weights.items())


def _provenance(weights: Path) -> tuple[str, str]:
    """The command that produced `weights` and the data it was trained on, from the manifest
    beside them, so the chain can be rerun and the continuation described."""
    try:
        training = load_manifest(weights.parent).training
    except (DicomNodeError, OSError):
        return (f"(weights {weights.name}, sha256 {file_sha256(weights)})",
                f"unrecorded data (weights {weights.name} have no manifest beside them)")
    return training.command, training.data
