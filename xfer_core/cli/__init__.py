"""The command line: thin Typer commands that parse, call xfer_core, and render."""
