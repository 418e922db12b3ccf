"""coinrig rig layer: configuration, device drivers and the simulation backend."""
