#!/usr/bin/env python3
"""Unsupervised cross-domain image retrieval benchmark: `python run_benchmark.py --suite quickstart`.

See README.md, or `python run_benchmark.py --help` and `--list`.
"""
import sys
from pathlib import Path

# The harness runs from its checkout: its folders (benchmark, methods, datasets) are imported from here, not
# installed into site-packages (the generic name `datasets` would shadow the popular package).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
