"""What operators see: Sentry set-up and scrubbing, per-process query metrics and pool health."""
