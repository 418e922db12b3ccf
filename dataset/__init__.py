"""The on-disk dataset format, version 1 (docs/dataset-format.md): its one home.

Names and coin ids (`dataset.layout`), the schema of every file (`dataset.schema`), reading
(`dataset.jsonl`, `dataset.reader`), checking (`dataset.validate`) and where a command may write
(`dataset.outputs`: output folders and files, checked before any write). Capture writes datasets
and training reads them through this package; it imports no other coinrig package (rig, capture,
training, pipeline), so both sides agree on one definition of the format.
"""
