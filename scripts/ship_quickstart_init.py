"""Train the quickstart's SimCLR init (benchmark/backbone_specs.py, QUICKSTART_BACKBONE; the recipe of
suites/quickstart.toml) and write it to benchmark/shipped_inits/ under its cache name, replacing the shipped init of an
older recipe; prints the numbers its README records. Run it after changing the quickstart's recipe, the small CNN or
the synthetic data (tests/test_shipped_init.py fails until then):

    python scripts/ship_quickstart_init.py [--threads 2]
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmark.backbone_specs import QUICKSTART_BACKBONE  # noqa: E402
from benchmark.initialisation import SHIPPED_INITS, pretrain_simclr, simclr_file_name  # noqa: E402
from benchmark.store import atomic_torch_save  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    name = simclr_file_name(QUICKSTART_BACKBONE)
    with tempfile.TemporaryDirectory() as cache:
        started = time.time()
        state = pretrain_simclr(QUICKSTART_BACKBONE, Path(cache), None, torch.device("cpu"))
        seconds = time.time() - started
    for stale in SHIPPED_INITS.glob(f"{QUICKSTART_BACKBONE['arch']}-simclr-*.pt"):
        stale.unlink()
    atomic_torch_save(SHIPPED_INITS / name, state)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=SHIPPED_INITS).stdout.strip()
    print(f"wrote {SHIPPED_INITS / name}: trained in {seconds:.0f} s on {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), code at commit {commit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
