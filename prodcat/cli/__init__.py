"""Layer 8 of 8, the top: the commands (train, predict, evaluate, audit, push), which turn flags into calls.

May import every layer; no other layer imports it. Logic worth testing belongs in a lower layer (docs/architecture.md).
"""
