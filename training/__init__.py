"""Metric-learning training, evaluation, search and explanations (never imports rig)."""
