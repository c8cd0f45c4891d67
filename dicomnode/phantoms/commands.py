"""`dicomnode phantom`: write a synthetic head CT series to a folder."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from dicomnode.phantoms.dicom_writer import write_enhanced_series, write_series
from dicomnode.phantoms.lesions import LESION_KINDS, LESION_NAMES
from dicomnode.phantoms.volume import FULL_NOISE_CAP_HU, NOISE_CAP_HU, make_study

logger = logging.getLogger(__name__)


def cmd_phantom(
    outdir: Path,
    lesion: str | None,
    seed: int,
    slice_thickness: float | None,
    matrix: int,
    *,
    vendor: str | None = None,
    size: str | None = None,
    position: str = "HFS",
    field_of_view: float | None = None,
    gantry_tilt: float = 0.0,
    head_pitch: float = 0.0,
    head_roll: float = 0.0,
    head_yaw: float = 0.0,
    enhanced: bool = False,
    full_noise: bool = False,
    contrast: float | None = None,
    metal: bool = False,
    subdural_age: str = "acute",
    mass_effect: bool = False,
    lossy_ratio: float | None = None,
) -> int:
    """Generate one phantom study and write it as DICOM; returns the exit status."""
    if lesion is not None and lesion not in LESION_KINDS:
        print(f"error: unknown lesion {lesion!r}; choose one of {', '.join(LESION_KINDS)}")
        return 2
    if subdural_age != "acute" and lesion != "sdh":
        print(f"error: --subdural-age {subdural_age} needs --lesion sdh")
        return 2
    if mass_effect and lesion not in ("sdh", "edh"):
        print("error: --mass-effect needs --lesion sdh or edh (a mass always pushes)")
        return 2
    if lossy_ratio is not None and (enhanced or not lossy_ratio > 1.0):
        print("error: --lossy-ratio must be above 1, and is for single-frame series (not with --enhanced)")
        return 2
    start = time.monotonic()
    try:
        study = make_study(
            seed, lesion, slice_thickness_mm=slice_thickness, matrix=matrix, lesion_size=size, vendor=vendor,
            field_of_view_mm=field_of_view, gantry_tilt_deg=gantry_tilt,
            head_pitch_deg=head_pitch, head_roll_deg=head_roll, head_yaw_deg=head_yaw,
            noise_cap_hu=FULL_NOISE_CAP_HU if full_noise else NOISE_CAP_HU,
            contrast_hu=contrast, metal=metal, subdural_age=subdural_age, mass_effect=mass_effect,
        )
    except (ValueError, KeyError) as exc:
        print(f"error: {exc}")
        return 2
    if enhanced:
        write_enhanced_series(study, Path(outdir), seed=seed, vendor=vendor, position=position)
    else:
        write_series(study, Path(outdir), seed=seed, vendor=vendor, position=position,
                     lossy_ratio=lossy_ratio)
    what = (
        "healthy head"
        if lesion is None
        else f"{LESION_NAMES[lesion]} ({study.lesion_size}, {study.lesion_volume_ml:.1f} ml"
        + (f", {subdural_age}, {study.details['hu']:.0f} HU" if lesion == "sdh" else "")
        + (_septum_words(study.details["septum_shift_mm"]) if "septum_shift_mm" in study.details else "")
        + ")"
    )
    dz, _, dx = study.spacing
    packed = " as one multi-frame instance" if enhanced else ""
    print(
        f"wrote {study.shape[0]} CT images{packed} to {outdir}: seed {seed}, {what}, {study.vendor} profile, "
        f"{study.shape[1]}x{study.shape[2]} at {dx:.3f} mm, {dz:g} mm slices, patient {position}"
        + (f", gantry tilted {gantry_tilt:g} degrees" if gantry_tilt else "")
        + (f", head pitched {head_pitch:+g} degrees" if head_pitch else "")
        + (f", head rolled {head_roll:+g} degrees" if head_roll else "")
        + (f", head turned {head_yaw:+g} degrees" if head_yaw else "")
        + (", full thin-slice noise" if full_noise else "")
        + ("" if contrast is None else f", contrast-enhanced (vessels {contrast:g} HU, agent not recorded)")
        + (f", a {2 * study.details['metal_radius_mm']:.0f} mm coil with its streaks" if metal else "")
        + ("" if lossy_ratio is None else f", JPEG 2000 compressed with loss at about {lossy_ratio:g}:1")
        + " "
        f"({time.monotonic() - start:.1f} s)"
    )
    print("synthetic phantom data - NOT FOR DIAGNOSIS")
    return 0


def _septum_words(shift_mm: float) -> str:
    """How far the lesion moved the septum pellucidum (along RAS x: + is the patient's right)."""
    return f", septum moved {abs(shift_mm):.1f} mm to the patient's {'right' if shift_mm > 0 else 'left'}"
