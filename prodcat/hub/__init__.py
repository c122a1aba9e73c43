"""Layer 6 of 8: sharing a trained output folder: the model card and the push to the Hugging Face Hub.

May import prodcat.inference, evaluation, modeling, data and core (docs/architecture.md).
"""
