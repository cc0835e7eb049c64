"""Test support for xfer and its plugin authors: real-service fixtures and backend conformance suites."""
