"""The HTTP API: health, readiness and metrics now; prompts and candidates as they land."""
