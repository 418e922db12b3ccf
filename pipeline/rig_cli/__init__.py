"""The `rig` command: one module per command group, assembled in `app`.

Part of the composition root: imports `rig` and `capture`, never `training`.
"""
