"""The launcher: the pilot that runs a site's jobs inside a batch allocation (being built)."""
