"""The shared training engine: Ray Train driver, per-worker loop, collectives."""
