"""Write a trained pseudo-healthy model as an engine folder: ONNX, state dict, manifest, card."""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from dicomnode.engines.manifest import file_sha256, load_manifest
from dicomnode.phantoms.lesions import describe_subdural_age
from dicomnode.phantoms.volume import FIELD_OF_VIEW_MM
from dicomnode.training.data import MODEL_MATRIX, TEXTURE_RANGES, THICKNESSES
from dicomnode.training.model import HU_WINDOW, PseudoHealthyUNet, parameter_count
from dicomnode.training.train import LOSS_LOG, TrainConfig, TrainResult

logger = logging.getLogger(__name__)

NAME = "anomaly_triage"
VERSION = "0.9.0"
INPUT_NAME = "image"
OUTPUT_NAME = "pseudo_healthy"
OPSET = 17
MAX_BATCH = 32


def export_onnx(model: PseudoHealthyUNet, path: Path, size: int = MODEL_MATRIX) -> None:
    """Opset 17, dynamic batch; height and width are fixed to `size` (the documented model grid)."""
    model.eval()
    example = torch.zeros(1, 1, size, size)
    with warnings.catch_warnings():
        # The TorchScript exporter needs no onnxscript; its deprecation notice is noise here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def manifest_dict(
    sha256: str, *, seed: int, command: str, studies: int, size: int = MODEL_MATRIX, mirrored: bool = False,
    continued: str | None = None,
) -> dict[str, Any]:
    """The engine manifest. `continued` is the training data of the model this run continued
    (`--init`), so a continuation does not describe its own run's studies as all it learnt from."""
    thicknesses = "/".join(f"{t:g}" for t in THICKNESSES)
    narrowest, widest = FIELD_OF_VIEW_MM
    tensor = {"dtype": "float32", "layout": "NCHW", "shape": ["batch", 1, size, size]}
    return {
        "name": NAME,
        "version": VERSION,
        "task": (
            f"pseudo-healthy restoration of non-contrast head CT slices on a {size}x{size} grid covering the "
            f"reconstruction field of view ({narrowest:g}-{widest:g} mm as in training; wider is cut around "
            "the head, narrower padded); anomaly map = input - output inside the intracranial mask"
        ),
        "file": "model.onnx",
        "sha256": sha256,
        # Separate shape lists, so the YAML has no anchors and aliases.
        "inputs": [{"name": INPUT_NAME, **tensor, "shape": list(tensor["shape"])}],
        "outputs": [{"name": OUTPUT_NAME, **tensor, "shape": list(tensor["shape"])}],
        "dynamic_dims": {"batch": {"min": 1, "opt": 8, "max": MAX_BATCH}},
        # The node cuts a wider field of view to this range, so the head keeps the scale trained on.
        "preprocessing": {"hu_window": [HU_WINDOW[0], HU_WINDOW[1]], "normalize": "unit",
                          "field_of_view_mm": [narrowest, widest]},
        "training": {
            "command": command,
            "seed": seed,
            "data": (
                f"synthetic head CT phantoms (dicomnode.phantoms, MNI152 2009 anatomy), {studies} studies "
                f"rendered on the fly at {size}x{size}, slice thickness {thicknesses} mm, "
                "all lesion kinds and sizes plus healthy heads; targets are each study's lesion-free twin"
                + (f"; continuing a model trained on: {continued}" if continued else "")
            ),
            "date": dt.date.today().isoformat(),
        },
        "torch_module": "dicomnode.training.model:" + ("build_mirrored" if mirrored else "build"),
        "torch_weights": "model.pt",
        "description": (
            "Small 2D U-Net (4 levels) predicting a residual correction; healthy tissue passes through. "
            "Phantom-trained research model: NOT FOR DIAGNOSIS."
        ),
    }


def check_parity(
    model: PseudoHealthyUNet, onnx_path: Path, batch: int = 2, size: int = MODEL_MATRIX
) -> float:
    """Largest absolute difference between torch and ONNX Runtime on a random batch."""
    import onnxruntime as ort

    x = np.random.default_rng(0).random((batch, 1, size, size), dtype=np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    return float(np.max(np.abs(np.asarray(got) - expected)))


def export_engine(
    result: TrainResult, output_dir: Path, *, seed: int, command: str, work_dir: Path,
    continued: str | None = None,
) -> list[Path]:
    """Write model.onnx, model.pt, manifest.yaml and card.md; the manifest is re-read to validate it.
    `continued`: the training data of the model the run continued, from its manifest."""
    output_dir.mkdir(parents=True, exist_ok=True)
    model = result.model.eval()
    onnx_path = output_dir / "model.onnx"
    export_onnx(model, onnx_path)
    weights = output_dir / "model.pt"
    torch.save(model.state_dict(), weights)
    diff = check_parity(model, onnx_path)
    logger.info("ONNX vs torch max abs difference: %.2e", diff)
    manifest = manifest_dict(file_sha256(onnx_path), seed=seed, command=command, studies=result.studies,
                             mirrored=model.mirrored, continued=continued)
    manifest_path = output_dir / "manifest.yaml"
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False, width=100), encoding="utf-8")
    load_manifest(output_dir)
    card = output_dir / "card.md"
    card.write_text(card_text(result, manifest, work_dir / LOSS_LOG, diff, continued), encoding="utf-8")
    return [onnx_path, weights, manifest_path, card]


def loss_summary(log_path: Path, window: int = 100) -> list[tuple[int, float]]:
    """(step, mean loss over the preceding `window` steps) at ~10 points of the run."""
    if not log_path.is_file():
        return []
    rows = [line.split(",") for line in log_path.read_text().splitlines() if line]
    losses = np.array([float(r[1]) for r in rows])
    if not len(losses):
        return []
    points = sorted({min(len(losses), max(window, round(len(losses) * f / 10))) for f in range(1, 11)})
    return [(p, float(losses[max(0, p - window) : p].mean())) for p in points]


def _loss_text(config: TrainConfig) -> str:
    """The loss and data mix of a run, in words, for the card."""
    if config.huber_hu > 0:
        text = f"Huber (errors under {config.huber_hu:g} HU cost quadratically, larger ones as L1)"
    else:
        text = "L1"
    text += f", weighted x{1 + config.lesion_weight:g} inside the (dilated) lesion mask"
    if config.subtle_hu > 0:
        text += (f", up to 4x more for faint lesions (weight x clamp({config.subtle_hu:g} / mean lesion "
                 "|HU change|, 1, 4))")
    if config.kind_weights:
        mix = ", ".join(f"{kind} x{weight:g}" for kind, weight in config.kind_weights.items())
        text += f"; lesion kinds drawn with relative weights {mix} (others x1)"
    if config.vary_texture:
        ranges = ", ".join(f"{key} {low:g}-{high:g}" for key, (low, high) in TEXTURE_RANGES.items())
        text += f"; each study's scanner texture drawn uniformly ({ranges}; px = Gaussian sigma at 512)"
    if config.healthy_slices != 1:
        text += (f"; besides the lesion's slices, {config.healthy_slices} healthy slices from each third of "
                 "the coverage (skull base, mid-brain, vertex)")
    if config.scanner_matrix_share:
        text += (f"; {config.scanner_matrix_share:.0%} of studies rendered at 512x512 and resampled to the "
                 "model grid as the node resamples a series")
    if config.extra_pitch_deg:
        text += (f"; each head pitched a further uniform ±{config.extra_pitch_deg:g} degrees about its "
                 "left-right axis besides the drawn pose's ±12")
    if config.older_subdurals:
        days, weeks, fresh = (describe_subdural_age(age) for age in ("subacute", "chronic", "acute"))
        text += (f"; {config.older_subdurals:.0%} of subdural haematomas {days} or {weeks}, half each, "
                 f"the rest {fresh}")
    return text


def _hypodense_limit(config: TrainConfig) -> str:
    if config.huber_hu > 0:
        return """- Hypodense findings (infarct, the oedema around a mass) lower the parenchyma by only
  5-15 HU; the Huber loss lets the network restore them in part, and the healthy brain
  drifts a little with it. Measure both on validation phantoms
  (`dicomnode evaluate anomaly_triage --validation`) before setting `hypodense_floor_hu`."""
    return """- Hypodense findings (infarct, the oedema around a mass) are likely not restored: under
  plain L1 every healthy pixel pulls towards "change nothing" as hard as a lesion pixel
  pulls towards its target, so a 5-15 HU drop the network is unsure of is left in place
  (model 0.2.0 changed infarcts by 0.0 HU). `--huber-hu` removes that pull."""


def _hardware(config: TrainConfig) -> str:
    """What the run trained on, as the card names it (the loss curve depends on it only through speed)."""
    device = torch.device(config.device)
    if device.type == "cuda":
        return f"one {torch.cuda.get_device_name(device)}"
    return f"{config.threads} CPU cores"


def card_text(result: TrainResult, manifest: dict[str, Any], log_path: Path, parity: float,
              continued: str | None = None) -> str:
    size = MODEL_MATRIX
    earlier = (f"\n- Continued (`--init`) from a model trained on: {continued}. The studies above are"
               " this run's alone." if continued else "")
    curve = "\n".join(f"| {step} | {loss:.4f} |" for step, loss in loss_summary(log_path))
    return f"""# anomaly_triage {manifest["version"]}: pseudo-healthy head CT (phantom-trained)

**NOT FOR DIAGNOSIS.** Research and demonstration model, trained only on synthetic phantoms.

## What it is for

The `anomaly_triage` generator feeds every axial slice of a non-contrast head CT through
this network, which returns a *pseudo-healthy* version of the slice: what the slice would
look like without the lesion. The anomaly map is the difference input - output inside the
intracranial mask; the study score ranks studies on the triage worklist.

## Contract

- Input `{INPUT_NAME}`: float32 `[batch, 1, {size}, {size}]`. Each slice is resampled to
  {size}x{size} covering the whole reconstruction field of view (area averaging; a 512
  matrix becomes 2x2 means), then HU are clipped to [{HU_WINDOW[0]:g}, {HU_WINDOW[1]:g}] and scaled
  to 0..1 (`(hu - {HU_WINDOW[0]:g}) / {HU_WINDOW[1] - HU_WINDOW[0]:g}`). Rows anterior to posterior, columns
  patient right to left (standard axial display).
- Output `{OUTPUT_NAME}`: same shape and scaling, clamped to 0..1; multiply by
  {HU_WINDOW[1] - HU_WINDOW[0]:g} and add {HU_WINDOW[0]:g} for HU. Hyperdense blood (55-90 HU) and hypodense
  infarct (parenchyma -8 to -15 HU) both lie inside the window.
- Batch is dynamic (1-{MAX_BATCH}); height and width are fixed at {size} in the ONNX file (the
  torch module is fully convolutional: any size divisible by 8).

## How it was trained

- Network: 2D U-Net, 4 levels (16-32-64-128 channels), batch norm, residual output,
  {parameter_count(result.model):,} parameters (`dicomnode.training.model:build`).
- Data: {result.studies} phantom studies from `dicomnode.phantoms` (MNI152 2009 anatomy from
  nilearn; skull, scalp, random pose, head size, elastic warp, kernel blur, scanner noise of
  three vendor profiles), lesions of every kind (intraparenchymal, subdural, epidural,
  subarachnoid haemorrhage, infarct, mass with midline shift) and size, plus healthy heads.
  The target is the study's exact lesion-free twin (same head, pose and noise), so healthy
  tissue is an identity example and lesions must be replaced by plausible anatomy.{earlier}
- Loss: {_loss_text(result.config)}; AdamW, cosine schedule, random 160x160 crops and
  left-right flips. A command chained with `&&` continues the first run's
  weights (`--init`) with the second's settings.
- Command: `{manifest["training"]["command"]}` (seed {manifest["training"]["seed"]}),
  {len(result.losses)} steps in {result.seconds / 60:.0f} min on {_hardware(result.config)}.
- ONNX export: opset {OPSET}; largest difference to torch eager on a random batch {parity:.1e}.

Training loss (mean of the previous 100 steps):

| step | loss |
| ---: | ---: |
{curve}

## Evaluation

see `dicomnode evaluate anomaly_triage`

## Limits

- Trained on phantoms only: one template anatomy (MNI152) under random deformation; no
  real patient data. Performance on real scans is unknown.
- No skull-base detail (orbits, sinuses, mastoids, petrous bone), no streak or
  beam-hardening artefacts, no motion, no contrast, no paediatric heads.
- Subtle findings (small infarcts, thin subdurals, little subarachnoid blood) are at the
  edge of what a {size}x{size} slice and a short CPU training run can restore; a small
  residual anomaly may be missed, and healthy variants absent from the phantoms
  (calcifications other than pineal and choroid plexus, old infarcts) may light up.
{_hypodense_limit(result.config)}
- At the skull base, bone partially inside a thick slice brightens the brain next to it;
  the model sometimes removes that as if it were blood, which is the largest source of
  false positives on healthy heads.
- Output is a machine-generated image: **NOT FOR DIAGNOSIS**.
"""
