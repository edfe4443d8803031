"""benchmark/launchers.py's `--jobs auto`: how many runs at once on this machine (one per GPU, on a CPU its cores
up to AUTO_CPU_JOBS), and what the command line accepts."""
from __future__ import annotations

import pytest

from benchmark import cli, launchers

from .conftest import REAL_AUTO_JOBS


def test_auto_is_a_job_per_core_up_to_four_on_a_cpu_and_one_per_gpu(monkeypatch):
    real_auto_jobs = REAL_AUTO_JOBS                     # the conftest gives in-process tests one job
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for cores, expected in ((1, 1), (2, 2), (3, 3), (4, 4), (16, 4)):
        monkeypatch.setattr(launchers.os, "sched_getaffinity", lambda pid, n=cores: set(range(n)))
        assert real_auto_jobs("auto") == expected == real_auto_jobs("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert real_auto_jobs("auto") == 3 and real_auto_jobs("cuda") == 3 and real_auto_jobs("cuda:1") == 1
    assert real_auto_jobs("cpu") == 4                               # 16 cores, a GPU not asked for


def test_the_command_line_takes_auto_by_default_or_a_count():
    parser = cli.build_parser()
    assert parser.parse_args([]).jobs == "auto" and parser.parse_args(["--jobs", "3"]).jobs == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--jobs", bad])


def test_threads_are_shared_out_over_the_cores_this_process_may_use_not_the_node_s(monkeypatch):
    # `srun -c 4` on a 64-core node: affinity 4 cores; auto gives 4 jobs of 1 thread, not 4 x 16 on 4 cores
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(launchers.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(launchers.os, "sched_getaffinity", lambda pid: set(range(4)))
    assert REAL_AUTO_JOBS("auto") == 4 and launchers.threads_per_job(4) == 1 and launchers.threads_per_job(2) == 2
    assert launchers.threads_per_job(8) == 1


def test_a_dry_run_for_slurm_checks_the_profile_and_flags_it_would_submit_with(tmp_path, capsys):
    profile = tmp_path / "site.toml"
    profile.write_text('partitio = "gpu"\n')                     # a typo: found by the check before submitting
    output = tmp_path / "results"
    assert cli.main(["--suite", "quickstart", "--dry-run", "--launcher", "slurm", "--slurm-profile", str(profile),
                     "--output", str(output)]) == 2
    assert "unknown key(s) partitio; expected some of partition" in capsys.readouterr().err and not output.exists()

