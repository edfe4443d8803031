"""Reports read what is stored (issue 16, item 3): runs made with --set appear as rows of their own, labelled by
what differs, in the suite's report and in the summary; stored runs no row can show are counted and said."""
from __future__ import annotations

import json
import shutil

from benchmark import cli, store
from benchmark.suites import plan

from .conftest import tiny_suite


def _cli(suite, output, cache_dir, *extra):
    return ["--suite", suite.name, "--output", str(output), "--cache-dir", str(cache_dir), "--device", "cpu",
            "--methods", "pretrained", "cds", *extra]


def test_runs_made_with_set_are_rows_of_their_own(tmp_path, cache_dir, capsys, one_thread):
    suite = tiny_suite("test_stored_rows", methods=["pretrained", "cds"])
    for epochs in (1, 2):
        assert cli.main(_cli(suite, tmp_path, cache_dir, "--set", f"cds.epochs={epochs}")) == 0
    capsys.readouterr()
    # A report with today's defaults: the planned CDS run is missing, the two stored ones are rows of their own.
    assert cli.main(_cli(suite, tmp_path, cache_dir, "--report")) == 0
    out = capsys.readouterr().out
    assert "| CDS (epochs=1)" in out and "| CDS (epochs=2)" in out and "| Pretrained (init)" in out
    lines = [line for line in out.splitlines() if line.startswith("| CDS")]
    # The planned row first, then the stored variants in the order the store lists their folders (by run id: a
    # PROTOCOL_VERSION bump can swap them).
    assert [line.split("|")[1].strip() for line in lines][0] == "CDS"
    assert sorted(line.split("|")[1].strip() for line in lines[1:]) == ["CDS (epochs=1)", "CDS (epochs=2)"]
    assert "–" in lines[0] and "–" not in lines[1] and "–" not in lines[2]
    # ... and in the summary across suites
    assert cli.main(["--report", "--summary", "--output", str(tmp_path)]) == 0
    summary = capsys.readouterr().out
    assert "| CDS (epochs=1)" in summary and "| CDS (epochs=2)" in summary
    # A stored run of another protocol version cannot be compared: left out, and said.
    spec = plan(suite, methods=["cds"], assignments=["cds.epochs=1"])[0]
    old = spec.run_dir(tmp_path).with_name("seed2024-oldprotocol")
    shutil.copytree(spec.run_dir(tmp_path), old)
    data = json.loads((old / "spec.json").read_text())
    data["protocol_version"] = 1
    (old / "spec.json").write_text(json.dumps(data))
    assert len(store.stored_specs(tmp_path, "synthetic")) == 4
    assert cli.main(_cli(suite, tmp_path, cache_dir, "--report")) == 0
    out = capsys.readouterr().out
    assert "1 stored run(s) of this suite's grid left out: another protocol version" in out
