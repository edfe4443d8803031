"""Methods from outside the harness (methods/plugins.py): docs/extending.md's worked example, as a file in a
temporary folder, runs through the command line, with `--jobs 2` (workers import it again), and reaches the tables
with its label; a module dropped into methods/ is found without editing methods/__init__.py; a broken plugin stops
with its name."""
from __future__ import annotations

import importlib
import re
import shutil
from pathlib import Path

import pytest

from benchmark import cli, store
from benchmark.suites import plan
from methods.registry import REGISTRY

from .conftest import tiny_suite

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "my_method.py"


def test_the_docs_show_the_example_file_as_it_is():
    section = (REPO / "docs" / "extending.md").read_text().split("## Adding a method", 1)[1].split("\n## ", 1)[0]
    shown = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    source = EXAMPLE.read_text()
    assert shown == source[source.index("from dataclasses"):]
    assert "--plugin examples/my_method.py" in section


def _cli(suite: str, output: Path, cache_dir: Path, *extra: str) -> list[str]:
    return ["--suite", suite, "--output", str(output), "--cache-dir", str(cache_dir), "--device", "cpu", *extra]


@pytest.mark.slow
def test_a_plugin_file_runs_with_two_workers_and_reaches_the_tables(tmp_path, cache_dir, capsys, clean_registries):
    plugin = tmp_path / "elsewhere" / "my_method.py"
    plugin.parent.mkdir()
    shutil.copy(EXAMPLE, plugin)
    suite = tiny_suite("test_plugin_jobs", methods=["pretrained"])
    args = _cli(suite.name, tmp_path / "out", cache_dir, "--plugin", str(plugin), "--methods", "pretrained",
                "mymethod", "--set", "mymethod.epochs=1", "--seeds", "2024", "2025")
    assert cli.main(args + ["--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "trained 4 run(s)" in out and "0 failed" in out
    assert "| MyMethod" in out                                 # its label in the table
    specs = [s for s in plan(suite, methods=["mymethod"], seeds=[2024, 2025], assignments=["mymethod.epochs=1"])]
    for spec in specs:
        run_dir = spec.run_dir(tmp_path / "out")
        assert store.run_status(run_dir) == "done"
        assert store.read_launch(run_dir).plugins == (str(plugin.resolve()),)   # what the workers imported
    # --list and --report know it too
    assert cli.main(["--plugin", str(plugin), "--list"]) == 0
    assert re.search(r"^  mymethod +An example method", capsys.readouterr().out, re.M)
    assert cli.main(args + ["--report"]) == 0
    assert "| MyMethod" in capsys.readouterr().out


def test_a_report_without_the_plugin_names_the_unknown_method(tmp_path, cache_dir, capsys, clean_registries):
    suite = tiny_suite("test_plugin_missing", methods=["pretrained"])
    assert cli.main(_cli(suite.name, tmp_path, cache_dir, "--methods", "mymethod", "--report")) == 2
    err = capsys.readouterr().err
    assert "unknown method(s) mymethod; registered methods: pretrained" in err and "--plugin" in err


@pytest.mark.parametrize("content, expected", [
    (None, "no such file"),
    ("raise RuntimeError('needs a GPU driver')", "failed to import: RuntimeError: needs a GPU driver"),
])
def test_a_broken_plugin_stops_with_its_name(tmp_path, capsys, clean_registries, content, expected):
    plugin = tmp_path / "broken_plugin.py"
    if content is not None:
        plugin.write_text(content + "\n")
    assert cli.main(["--plugin", str(plugin), "--suite", "quickstart", "--output", str(tmp_path / "out"),
                     "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert str(plugin) in err and expected in err
    assert not (tmp_path / "out").exists()                       # nothing written


def test_a_module_dropped_into_methods_is_found_without_editing_the_package(clean_registries):
    import methods
    dropped = Path(methods.__file__).parent / "zz_dropped_test_method.py"
    dropped.write_text(EXAMPLE.read_text().replace('"mymethod"', '"dropped_method"'))
    try:
        importlib.reload(methods)
        assert "dropped_method" in REGISTRY
        assert REGISTRY["dropped_method"].__module__ == "methods.zz_dropped_test_method"
    finally:
        dropped.unlink()
