"""The composition root: the `rig` and `pipeline` commands and their shared plumbing.

May import every other coinrig package (`rig`, `capture`, `training`, `dataset`); nothing
imports it (docs/design.md). Commands parse options and call library functions, nothing more.
"""
