"""Simulation backend: wire-level emulators, the digital twin and its camera."""
