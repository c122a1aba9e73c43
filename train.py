"""Fine-tune a product categoriser: ``python train.py [--train_file products.csv ...]`` (see README)."""

import sys

from prodcat.cli.main import run_guarded, train_main

if __name__ == "__main__":
    sys.exit(run_guarded(train_main, sys.argv[1:]))
