"""The HTTP API: health, readiness, metrics, the served prompt, versions and candidates, and a
person's decisions (approve, reject, rollback) behind the admin token."""
