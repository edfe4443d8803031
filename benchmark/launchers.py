"""Launchers: how planned runs are executed. Every launcher calls the same `runner.run_one(spec_path)`.

`local`: in this process, one run after another, with a progress bar; a failed run is recorded (FAILED) and the
suite goes on.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from tqdm import tqdm

from .runner import run_one
from .spec import load_spec

log = logging.getLogger(__name__)


def launch_local(spec_paths: list[Path]) -> dict:
    """Returns {"done": n, "failed": [(spec_path, reason)], "seconds": s}."""
    started = time.time()
    failed = []
    done = 0
    bar = tqdm(spec_paths, desc="runs", unit="run", file=sys.stderr, dynamic_ncols=True)
    for spec_path in bar:
        spec = load_spec(spec_path)
        bar.set_postfix_str(f"{spec.method} {spec.setting} {spec.query_domain}->{spec.retrieval_domain} "
                            f"seed {spec.seed}")
        try:
            run_one(spec_path)
            done += 1
        except Exception as error:  # recorded in FAILED by run_one; the suite goes on
            failed.append((spec_path, f"{type(error).__name__}: {error}"))
            tqdm.write(f"run failed: {spec_path.parent}: {type(error).__name__}: {error}", file=sys.stderr)
    bar.close()
    return {"done": done, "failed": failed, "seconds": time.time() - started}


LAUNCHERS = {"local": launch_local}
