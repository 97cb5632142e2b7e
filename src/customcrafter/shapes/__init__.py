"""The shapes world, its detectors and the small model trained on it."""
