"""Training and export of the reference models (extra [train]: torch, onnx, nilearn, scipy)."""
