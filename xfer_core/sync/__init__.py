"""xfer_core.sync"""
