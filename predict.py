"""Categorise products: ``python predict.py --model outputs/model "Lenovo laptop with 16GB RAM"`` (see README)."""

import sys

from prodcat.cli.main import predict_main, run_guarded

if __name__ == "__main__":
    sys.exit(run_guarded(predict_main, sys.argv[1:]))
