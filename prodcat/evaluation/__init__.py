"""Layer 4 of 8: scoring without training or predicting: calibration maths, taxonomy metrics, the evaluation report.

May import prodcat.modeling, data and core (docs/architecture.md).
"""
