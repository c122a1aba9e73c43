"""Metric modules shipped inside prodcat, loadable offline with ``evaluate.load(path)``."""

from __future__ import annotations

import os

#: Path of the taxonomy metric script, for ``evaluate.load(TAXONOMY_METRIC_PATH)``.
TAXONOMY_METRIC_PATH = os.path.join(os.path.dirname(__file__), "taxonomy_metrics.py")
