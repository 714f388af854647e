"""absl entry points, one per job; each is thin: flags + config, call the library, write the report."""
