"""Bulk transfers: shard engines, runtimes, schedulers, rendering, run-dir state."""
