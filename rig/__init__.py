"""Devices: configuration, device interfaces, drivers over their wires, and the simulation backend.

The bottom layer (docs/design.md): imports no other coinrig package. `capture` and `pipeline`
import it; `training` never does.
"""
