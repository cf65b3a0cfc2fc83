"""Training pipeline for the embedded demo model (off the serving path)."""
