"""The pipeline command: train, evaluate, index, search, explain."""
