"""Scanner profiles: how each vendor's head CT looks (noise, kernel blur) and what its headers say.

The tag values follow what these scanners commonly write for a routine non-contrast head;
they are plausible, not copies of any real device's conformance statement.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

logger = logging.getLogger(__name__)

# Noise grain and kernel blur are lengths, given in pixels of this matrix (~0.45 mm).
PROFILE_MATRIX = 512


@dataclass(frozen=True)
class VendorProfile:
    key: str
    manufacturer: str
    model: str
    convolution_kernel: str
    software_versions: str
    station_name: str
    series_description: str
    protocol_name: str
    kvp: float
    tube_current_ma: tuple[int, int]
    exposure_time_ms: int
    noise_hu: tuple[float, float]  # std at 5 mm before thickness scaling
    noise_grain_px: float  # noise correlation length (Gaussian sigma, pixels at 512)
    kernel_blur_px: float  # reconstruction blur (Gaussian sigma, pixels at 512)
    pixel_representation: int  # 0 unsigned, 1 signed storage
    rescale_intercept: float
    windows: tuple[tuple[float, float], ...]  # (center, width), first = brain window
    window_explanation: tuple[str, ...]
    scan_options: str
    filter_type: str
    extra: dict[str, object] = field(default_factory=dict)


VENDORS: dict[str, VendorProfile] = {
    "siemens": VendorProfile(
        key="siemens",
        manufacturer="SIEMENS",
        model="SOMATOM Definition AS+",
        convolution_kernel="H31s",
        software_versions="syngo CT VA48A",
        station_name="CTAWP73512",
        series_description="HEAD W/O CONTRAST",
        protocol_name="Head_Routine",
        kvp=120.0,
        tube_current_ma=(250, 330),
        exposure_time_ms=1000,
        noise_hu=(3.5, 5.5),
        noise_grain_px=0.9,
        kernel_blur_px=0.9,
        pixel_representation=0,
        rescale_intercept=-1024.0,
        windows=((40.0, 80.0), (600.0, 2800.0)),
        window_explanation=("WINDOW1", "WINDOW2"),
        scan_options="HELICAL",
        filter_type="0",
        extra={"SpiralPitchFactor": 0.55, "RotationDirection": "CW"},
    ),
    "ge": VendorProfile(
        key="ge",
        manufacturer="GE MEDICAL SYSTEMS",
        model="Revolution CT",
        convolution_kernel="STANDARD",
        software_versions="revo_ct_22bc.50",
        station_name="REVCT01",
        series_description="HEAD W/O CONTRAST 5mm",
        protocol_name="1.2 ROUTINE HEAD",
        kvp=120.0,
        tube_current_ma=(220, 300),
        exposure_time_ms=1000,
        noise_hu=(3.0, 4.5),
        noise_grain_px=1.2,
        kernel_blur_px=1.2,
        pixel_representation=1,
        rescale_intercept=-1024.0,
        windows=((40.0, 80.0),),
        window_explanation=("BRAIN",),
        scan_options="AXIAL MODE",
        filter_type="HEAD FILTER",
        extra={"RotationDirection": "CW"},
    ),
    "philips": VendorProfile(
        key="philips",
        manufacturer="Philips",
        model="Brilliance 64",
        convolution_kernel="UB",
        software_versions="4.1.6",
        station_name="HOST-PHIL64",
        series_description="Head wo contrast",
        protocol_name="Brain (Adult)/Head",
        kvp=120.0,
        tube_current_ma=(280, 380),
        exposure_time_ms=750,
        noise_hu=(4.5, 7.0),
        noise_grain_px=0.7,
        kernel_blur_px=0.7,
        pixel_representation=0,
        rescale_intercept=-1000.0,
        windows=((35.0, 90.0),),
        window_explanation=("Brain",),
        scan_options="HELIX",
        filter_type="UB",
        extra={"SpiralPitchFactor": 0.39},
    ),
}

# Never drawn for training: evaluation (and anyone) can ask for a scanner the model has not seen.
# A smoother iterative reconstruction with coarser noise grain than any training profile (though
# inside the range `train --vary-texture` draws), and signed storage with a zero rescale
# intercept, so the HU conversion takes another path too.
UNSEEN_VENDORS: dict[str, VendorProfile] = {
    "canon": VendorProfile(
        key="canon",
        manufacturer="CANON_MEC",
        model="Aquilion ONE",
        convolution_kernel="FC26",
        software_versions="V10.4",
        station_name="CTCANON1",
        series_description="Brain 5.0 FC26 AIDR3D",
        protocol_name="Routine Brain",
        kvp=120.0,
        tube_current_ma=(200, 300),
        exposure_time_ms=1000,
        noise_hu=(2.5, 4.0),
        noise_grain_px=1.8,
        kernel_blur_px=1.6,
        pixel_representation=1,
        rescale_intercept=0.0,
        windows=((40.0, 80.0), (500.0, 2500.0)),
        window_explanation=("BRAIN", "BONE"),
        scan_options="VOLUME",
        filter_type="FC26",
    ),
}


@dataclass(frozen=True)
class ScannerTexture:
    """Image texture that replaces a profile's: noise level, noise grain and kernel blur.

    Training draws these over a range wider than the three profiles' (see
    `dicomnode.training.data`), so the model learns what a scanner's texture is rather than
    three particular ones; the headers stay the profile's.
    """

    noise_hu: tuple[float, float]
    noise_grain_px: float
    kernel_blur_px: float

    def apply(self, profile: VendorProfile) -> VendorProfile:
        return replace(
            profile, noise_hu=self.noise_hu, noise_grain_px=self.noise_grain_px,
            kernel_blur_px=self.kernel_blur_px,
        )


def vendor_profile(key: str) -> VendorProfile:
    """A scanner profile by key, training or unseen; an unknown key names the known ones."""
    profiles = {**VENDORS, **UNSEEN_VENDORS}
    if key not in profiles:
        raise ValueError(f"unknown vendor {key!r}; expected one of {', '.join(sorted(profiles))}")
    return profiles[key]


__all__ = ["PROFILE_MATRIX", "UNSEEN_VENDORS", "VENDORS", "ScannerTexture", "VendorProfile", "vendor_profile"]
