"""Generators: one module per model-driven task (preprocess, run the engine, postprocess).

Generators know nothing of sockets or queues: they take the datasets of a complete series
and return DICOM objects (and, for triage, a worklist summary).
"""

from dicomnode.generators.base import Generator, GeneratorOutput, TriageSummary
from dicomnode.generators.ct import SeriesRejected

__all__ = ["Generator", "GeneratorOutput", "SeriesRejected", "TriageSummary"]
