"""Builtin plugin module (not built yet): registers nothing until its issue lands."""
