"""DICOM networking: the listener, the sender and the peer policy. Knows nothing of models."""
