"""Capture: plans, the session runner and the crash-safe dataset."""
