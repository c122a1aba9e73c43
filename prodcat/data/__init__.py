"""Layer 2 of 8: product files into tables and datasets (readers, columns, tables, splits) and the data audit.

May import prodcat.core only (docs/architecture.md).
"""
