"""Directory sync for `xfer sync` / `xfer fetch`: one engine with a direction, backends, excludes."""
