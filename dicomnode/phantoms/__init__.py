"""Synthetic head CT studies (MNI152-based phantoms) for demos, tests and training."""

from dicomnode.phantoms.dicom_writer import enhanced_image, write_enhanced_series, write_series
from dicomnode.phantoms.lesions import LESION_KINDS, LESION_NAMES, SIZE_CLASS_ML, SIZE_CLASSES
from dicomnode.phantoms.vendors import UNSEEN_VENDORS, VENDORS, vendor_profile
from dicomnode.phantoms.volume import PhantomStudy, make_pair, make_study

__all__ = [
    "LESION_KINDS",
    "LESION_NAMES",
    "SIZE_CLASSES",
    "SIZE_CLASS_ML",
    "UNSEEN_VENDORS",
    "VENDORS",
    "PhantomStudy",
    "enhanced_image",
    "make_pair",
    "make_study",
    "vendor_profile",
    "write_enhanced_series",
    "write_series",
]
