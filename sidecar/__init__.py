"""gepa-sidecar."""
