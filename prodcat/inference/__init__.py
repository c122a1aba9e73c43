"""Layer 5 of 8: texts into predictions: batching, the ONNX Runtime backend, the n-gram model, the Categorizer.

May import prodcat.evaluation, modeling, data and core (docs/architecture.md).
"""
