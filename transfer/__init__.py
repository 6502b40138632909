"""Data movement between locations (not built yet): local filesystem and Globus backends."""
