"""Our own inference-only implementation of the Hugging Face Wav2Vec2 family."""
