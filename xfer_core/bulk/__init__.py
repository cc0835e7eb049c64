"""xfer_core.bulk"""
