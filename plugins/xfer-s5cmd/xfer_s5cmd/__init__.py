"""xfer-s5cmd: a shard engine that copies a shard with s5cmd (work in progress)."""
