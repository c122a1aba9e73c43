"""Layer 1 of 8, the bottom: errors, category-path hierarchy, atomic writes and file formats, and the output
folder's artifacts (file names, training_summary.json, prodcat's keys in config.json).

Imports nothing of prodcat's; every other layer may import it (docs/architecture.md).
"""
