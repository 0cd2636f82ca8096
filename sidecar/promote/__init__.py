"""The lifecycle after the optimizer: approve, reject, roll back, and publish through the outbox."""
