"""Arm drivers: G-code arms with a suction cup."""
