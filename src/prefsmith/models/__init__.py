"""Model resolution, offline loading and log-prob scoring backends."""
