"""prodcat: fine-tune small language models to put products into a category taxonomy.

Example:
    >>> from prodcat.args import parse_train_args
    >>> from prodcat.training import run_training
    >>> run_training(*parse_train_args(["--train_file", "data/sample_products.csv"]))
"""

__version__ = "0.1.0"

from .predictor import Backoff, Categorizer, CategoryScore, Prediction  # noqa: E402,F401

__all__ = ["Backoff", "Categorizer", "CategoryScore", "Prediction", "__version__"]
