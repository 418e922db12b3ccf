"""The `rig` command: one module per command group, assembled in `app`."""
