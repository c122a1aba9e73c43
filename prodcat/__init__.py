"""prodcat: fine-tune small language models to put products into a category taxonomy.

Example:
    >>> from prodcat.args import parse_train_args
    >>> from prodcat.training import run_training
    >>> run_training(*parse_train_args(["--train_file", "data/sample_products.csv"]))
"""

__version__ = "0.1.0"
