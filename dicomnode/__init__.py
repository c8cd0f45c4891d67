"""dicomnode: a DICOM node for generative imaging AI."""

__version__ = "0.1.0"
