"""Layer 3 of 8: building and loading transformers: model loading, the classification head and its warm start, the loss.

May import prodcat.data and prodcat.core (docs/architecture.md).
"""
