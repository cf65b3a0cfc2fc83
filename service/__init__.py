"""Batch-invariant inference service for the Wav2Vec2 family."""

__version__ = "0.1.0"
