"""What code made a run (DESIGN §3.4): the commit of the checkout, whether its tree was dirty, a hash of the diff, and
the plugin files' hashes — recorded in env.json at every start of the run, and compared by `--dry-run` and the reports.

A change that is not a hyper-parameter (a constant in a method's module, a fix in the loop) keeps a run's id: two
checkouts then write and read the same run folders. The run's id cannot say which code made its number; this can:

    code_version()  -> {"commit": "3f2a…", "dirty": true, "diff_sha256": "9c1e…", "plugins": {"/x/my.py": "ab12…"}}
    code_label(...) -> "3f2a1b9c0d4e+dirty.9c1e0a2b" (the commit's first 12 hex digits; the diff's first 8)

The diff is `git diff HEAD` (tracked files, binary-safe) plus the names and contents of untracked files that git does
not ignore (a method file dropped into methods/ changes what runs); results/ and the like are ignored by .gitignore.
Outside a git checkout (an unpacked archive) the commit is "" and the label says "unknown".
"""
from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
GIT_TIMEOUT_S = 20


def _git(*args: str) -> bytes | None:
    try:
        result = subprocess.run(["git", *args], capture_output=True, timeout=GIT_TIMEOUT_S, cwd=REPO_ROOT)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def checkout_version() -> dict:
    """{"commit": hex or "", "dirty": bool, "diff_sha256": hex or ""} of the harness's checkout (once per process: the
    code a process runs does not change under it)."""
    commit = (_git("rev-parse", "HEAD") or b"").decode().strip()
    if not commit:
        return {"commit": "", "dirty": False, "diff_sha256": ""}
    digest = hashlib.sha256()
    diff = _git("diff", "HEAD", "--binary") or b""
    digest.update(diff)
    untracked = [name for name in (_git("ls-files", "--others", "--exclude-standard", "-z") or b"").split(b"\0")
                 if name]
    for name in sorted(untracked):
        digest.update(b"\0untracked\0" + name + b"\0")
        try:
            digest.update((REPO_ROOT / name.decode(errors="surrogateescape")).read_bytes())
        except OSError:
            pass
    dirty = bool(diff or untracked)
    return {"commit": commit, "dirty": dirty, "diff_sha256": digest.hexdigest() if dirty else ""}


def plugin_hashes(plugins) -> dict[str, str]:
    """sha256 of each plugin given as a file (a module name, imported from the environment, is recorded as "")."""
    hashes = {}
    for plugin in plugins or ():
        path = Path(plugin).expanduser()
        try:
            hashes[str(plugin)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        except OSError:
            hashes[str(plugin)] = ""
    return hashes


def code_version(plugins=()) -> dict:
    """The code this process runs a run with: the checkout's version and its plugins' hashes."""
    return {**checkout_version(), "plugins": plugin_hashes(plugins)}


def code_label(code: dict | None) -> str:
    """A short name of a code version: "<commit 12>", "+dirty.<diff 8>" when the tree was dirty, "+plugins.<hash 8>"
    when plugin files were loaded; "unknown" without a commit (an old run, or no git checkout)."""
    if not code or not code.get("commit"):
        return "unknown"
    label = code["commit"][:12]
    if code.get("dirty"):
        label += f"+dirty.{code.get('diff_sha256', '')[:8]}"
    plugins = code.get("plugins") or {}
    if plugins:
        label += "+plugins." + hashlib.sha256(json.dumps(plugins, sort_keys=True).encode()).hexdigest()[:8]
    return label


def start_record(code: dict, from_epoch: int, host: str, job: str | None, started: str) -> dict:
    """One start of a run (its first, or a resumption), as env.json's "starts" keeps them."""
    return {"started": started, "host": host, "job": job, "from_epoch": from_epoch, "code": code}


def run_code_labels(run_dir: Path) -> list[str]:
    """The code labels of every start of a run, in order (env.json's "starts"; an older env.json has its "git_sha"
    only: one label, its commit); [] without env.json."""
    try:
        record = json.loads((Path(run_dir) / "env.json").read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(record, dict):
        return []
    starts = record.get("starts")
    if isinstance(starts, list) and starts:
        return [code_label(start.get("code")) for start in starts if isinstance(start, dict)]
    return [code_label({"commit": record.get("git_sha", "")})]


def run_code(run_dir: Path) -> str:
    """The code that made a run: its one label, or "A then B" when it was resumed under other code."""
    labels = list(dict.fromkeys(run_code_labels(Path(run_dir))))
    return " then ".join(labels) if labels else "unknown"


def mixed_code_warnings(groups: dict[str, list], output_root: Path, describe) -> list[str]:
    """Warnings for the done runs of each group (a table: title -> its done specs) made by more than one code version,
    and for runs resumed under other code than they started with. `describe(spec)` names a run ("cds Ph->Sk seed
    2024"). Each warning names the versions, how many runs each made, and a few of the runs."""
    lines = []
    for title, specs in groups.items():
        by_code: dict[str, list] = defaultdict(list)
        for spec in specs:
            by_code[run_code(spec.run_dir(output_root))].append(spec)
        mixed = [code for code in by_code if " then " in code]
        if len(by_code) > 1:
            versions = "; ".join(f"{code} ({len(runs)} run(s), e.g. {', '.join(describe(s) for s in runs[:2])})"
                                 for code, runs in sorted(by_code.items(), key=lambda item: -len(item[1])))
            lines.append(f"warning: the done runs of {title} were made by {len(by_code)} versions of the code: "
                         f"{versions}. Numbers of different code may not compare: re-run the odd ones (delete their "
                         f"folders) or check that the change between them does not touch what they compute.")
        for code in mixed:
            lines.append(f"warning: in {title}, {len(by_code[code])} run(s) were resumed under other code than they "
                         f"started with ({code}): e.g. {', '.join(describe(s) for s in by_code[code][:3])}.")
    return lines
