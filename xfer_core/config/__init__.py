"""xfer_core.config"""
