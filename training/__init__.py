"""Learning: backbones, losses, data loading, training, evaluation, search and explanations.

Imports `dataset` (the on-disk format) and nothing else of coinrig: never `rig` (the drivers),
`capture` or `pipeline` (docs/design.md).
"""
