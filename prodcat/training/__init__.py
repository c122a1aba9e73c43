"""Layer 7 of 8: one training run: arguments, the run in steps, the Trainer, post-fit steps, refit, interrupt, summary.

May import every layer below it (hub, inference, evaluation, modeling, data, core), never prodcat.cli (docs/architecture.md).
"""
