"""prodcat: fine-tune small language models to put products into a category taxonomy.

Example:
    >>> from prodcat.training.config import parse_train_args
    >>> from prodcat.training.run import run_training
    >>> run_training(*parse_train_args(["--train_file", "data/sample_products.csv"]))
"""

__version__ = "0.1.0"

from prodcat.inference.categorizer import Backoff, Categorizer, CategoryScore, Prediction  # noqa: E402,F401

__all__ = ["Backoff", "Categorizer", "CategoryScore", "Prediction", "__version__"]
