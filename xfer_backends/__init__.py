"""Builtin plugins, registered through entry-point group ``xfer`` like any third-party plugin."""
