"""The remotes config: its shape (model), loading and validation (load), paths, and edits."""
