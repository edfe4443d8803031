"""The SLURM launcher: options, queue states and the census (no cluster needed), then the real thing against a
running Slurm cluster (tests/slurm/setup_local_slurm.sh starts one on this machine; `.ci/run` does it in CI).

Without a reachable cluster the cluster tests skip — except when CDR_REQUIRE_SLURM=1 (CI), where a skip would hide
a broken launcher, so they fail instead. Every wait is bounded.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmark import cli, pipeline, slurm, store
from benchmark.errors import UserError
from benchmark.suites import plan

from .conftest import tiny_suite

# --- options, profiles, queue states (no cluster) -------------------------------------------------------------------


def test_profile_then_command_line_then_sbatch_extras(tmp_path):
    profile = tmp_path / "site.toml"
    profile.write_text('partition = "gpu"\ngpus = 1\ntime = 240\naccount = "lab"\nsetup = ["module load cuda"]\n'
                       '[sbatch]\nexclude = "node7"\n')
    options = slurm.build_options(profile, {"time": 30, "partition": None}, ["exclusive", "--mail-type=END"])
    assert (options.partition, options.gpus, options.time, options.account) == ("gpu", 1, 30, "lab")
    assert options.sbatch == {"exclude": "node7", "exclusive": True, "mail_type": "END"}
    params = slurm.executor_parameters(options, "cdr-x")
    assert params["slurm_partition"] == "gpu" and params["gpus_per_node"] == 1 and params["timeout_min"] == 30
    assert params["slurm_account"] == "lab" and "slurm_qos" not in params and "mem_gb" not in params
    assert params["slurm_additional_parameters"] == {"exclude": "node7", "exclusive": True, "mail_type": "END"}
    assert params["slurm_setup"][0].startswith("export PYTHONPATH=") and params["slurm_setup"][1] == "module load cuda"


def test_the_sbatch_script_asks_what_the_flags_say(tmp_path, monkeypatch):
    # The #SBATCH lines submitit writes from our parameters (no cluster: sbatch is never called), and the flags'
    # --slurm-* spellings.
    import submitit
    args = cli.build_parser().parse_args(["--launcher", "slurm", "--slurm-partition", "gpu", "--gpus", "1", "--cpus",
                                          "8", "--mem", "32", "--time", "240", "--account", "lab", "--qos", "high",
                                          "--constraint", "a100", "--sbatch", "exclude=node7", "--array-parallelism",
                                          "16"])
    options = cli._slurm_options(args)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")     # submitit looks for srun
    executor = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    executor.update_parameters(**slurm.executor_parameters(options, "cdr-office_home_partial"))
    text = executor._executor._make_submission_file_text("python -u -m submitit.core._submit x", "uid")
    lines = set(text.splitlines())
    for expected in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=32GB", "--time=240",
                     "--account=lab", "--qos=high", "--constraint=a100", "--exclude=node7", "--signal=USR2@90",
                     "--job-name=cdr-office_home_partial", "--nodes=1", "--ntasks-per-node=1"):
        assert f"#SBATCH {expected}" in lines, expected
    assert any(line.startswith("export PYTHONPATH=") for line in lines)
    assert executor._executor.parameters["array_parallelism"] == 16


def test_bad_profiles_and_options_are_named(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        slurm.build_options(tmp_path / "absent.toml", {}, [])
    (tmp_path / "bad.toml").write_text("partition = \n")
    with pytest.raises(UserError, match="not valid TOML"):
        slurm.build_options(tmp_path / "bad.toml", {}, [])
    (tmp_path / "odd.toml").write_text('partiton = "gpu"\n')
    with pytest.raises(UserError, match="unknown key.*partiton"):
        slurm.build_options(tmp_path / "odd.toml", {}, [])
    with pytest.raises(UserError, match="gpus must be an integer >= 0"):
        slurm.build_options(None, {"gpus": -1}, [])
    with pytest.raises(UserError, match="malformed --sbatch"):
        slurm.build_options(None, {}, ["=x"])


def test_queue_states_say_queued_running_or_gone():
    states = {"12_0": "RUNNING", "12_1": "PENDING", "12_[4-6,9%2]": "PENDING", "13": "COMPLETING", "14_2": "REQUEUED"}
    assert slurm.active_state("12_0", states) == "running"
    assert slurm.active_state("12_1", states) == "queued"
    assert slurm.active_state("12_5", states) == "queued" and slurm.active_state("12_9", states) == "queued"
    assert slurm.active_state("12_7", states) is None          # not in the compressed ranges: gone
    assert slurm.active_state("13", states) == "running" and slurm.active_state("14_2", states) == "queued"
    assert slurm.active_state("15_0", states) is None and slurm.active_state("12_0", None) is None


def test_census_counts_runs_still_in_the_queue_and_does_not_submit_them(tmp_path, monkeypatch, capsys):
    suite = tiny_suite("test_slurm_census", methods=["pretrained"], seeds=(2024, 2025, 2026))
    specs = plan(suite)
    for spec, job in zip(specs, ("7_0", "7_1", "7_2")):
        run_dir = store.prepare_run_dir(spec, tmp_path, {})
        store.atomic_write_json(run_dir / slurm.JOB_FILE, {"job_id": job})
    monkeypatch.setattr(slurm, "queue_states", lambda: {"7_0": "RUNNING", "7_1": "PENDING"})
    monkeypatch.setattr(slurm, "accounting_states", lambda ids: {"7_2": "CANCELLED"})
    groups = pipeline.census(specs, tmp_path)
    assert [len(groups[s]) for s in ("running", "queued", "incomplete")] == [1, 1, 1]
    assert "1 queued, 1 running, 1 incomplete" in pipeline.census_text(groups, False)
    assert cli.main(["--suite", suite.name, "--output", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "job 7_0" in out and "job 7_2 (CANCELLED)" in out and "-> 1 to run" in out
    # the tables' footnotes say which seeds are still on the cluster
    assert cli.main(["--suite", suite.name, "--output", str(tmp_path), "--report"]) == 0
    assert "n=0 of 3 seeds (1 queued, 1 running, 1 incomplete)" in capsys.readouterr().out


def test_slurm_flags_without_the_slurm_launcher_are_refused(tmp_path, capsys):
    tiny_suite("test_slurm_flags", methods=["pretrained"])
    assert cli.main(["--suite", "test_slurm_flags", "--output", str(tmp_path), "--partition", "gpu"]) == 2
    assert "--partition only apply with --launcher slurm" in capsys.readouterr().err
    assert cli.main(["--suite", "test_slurm_flags", "--output", str(tmp_path), "--launcher", "slurm",
                     "--jobs", "2"]) == 2
    assert "--jobs is for --launcher local" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_local_jobs_run_several_runs_at_once_with_the_same_numbers(tmp_path, cache_dir, capsys):
    # --jobs 2: two worker processes, one thread each; the numbers are those of one run after another (one thread
    # is bitwise reproducible on the CPU).
    tiny_suite("test_local_jobs", methods=["pretrained", "cds"], seeds=(2024, 2025))
    common = ["--suite", "test_local_jobs", "--set", "cds.epochs=1", "--cache-dir", str(cache_dir), "--device", "cpu"]
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(common + ["--output", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(torch_threads)
    assert cli.main(common + ["--output", str(tmp_path / "two"), "--jobs", "2"]) == 0
    assert "trained 4 run(s)" in capsys.readouterr().out
    for spec in plan(tiny_suite("test_local_jobs"), assignments=["cds.epochs=1"]):
        one, two = (store.read_metrics(spec.run_dir(tmp_path / name)) for name in ("one", "two"))
        assert one == two, spec.method


# --- against a real cluster ----------------------------------------------------------------------------------------

def _cluster_reachable() -> bool:
    if not slurm.slurm_available():
        return False
    try:
        return subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20).stdout.count("UP") > 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture(scope="module")
def cluster():
    if not _cluster_reachable():
        if os.environ.get("CDR_REQUIRE_SLURM") == "1":
            pytest.fail("CDR_REQUIRE_SLURM=1 but no Slurm cluster answers (scontrol ping); .ci/run starts one with "
                        "tests/slurm/setup_local_slurm.sh")
        pytest.skip("no Slurm cluster reachable (tests/slurm/setup_local_slurm.sh starts one; CI requires it)")
    return True


WAIT_S = 420


def _wait(condition, what: str, output: Path, timeout: float = WAIT_S):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1)
    logs = sorted((output / slurm.LOG_FOLDER).glob("*/*.err"))
    tails = "\n".join(f"--- {p}\n" + "\n".join(p.read_text().splitlines()[-8:]) for p in logs[-3:])
    queue = subprocess.run(["squeue"], capture_output=True, text=True, timeout=20).stdout
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\nsqueue:\n{queue}\n{tails}")


def _slurm_cli(suite: str, output: Path, cache_dir: Path, *extra) -> list[str]:
    return ["--suite", suite, "--output", str(output), "--cache-dir", str(cache_dir), "--device", "cpu",
            "--launcher", "slurm", "--cpus", "1", "--time", "10", *extra]


def _job_gone(job_id: str) -> bool:
    states = slurm.queue_states()
    return states is not None and slurm.active_state(job_id, states) is None


def _checkpoint_epoch(run_dir: Path) -> int:
    path = run_dir / "ckpt" / "last.pt"
    try:
        return torch.load(path, weights_only=False)["epoch"] if path.is_file() else 0
    except Exception:            # being replaced at this moment
        return 0


@pytest.mark.slow
def test_a_suite_runs_end_to_end_as_a_slurm_job_array(cluster, tmp_path, cache_dir, capsys):
    suite = tiny_suite("test_slurm_suite", methods=["pretrained", "cds"], pairs=(("photo", "sketch"),
                                                                                 ("clipart", "painting")))
    # --max-array-size 3: the 4 runs go as two arrays (3 + 1 tasks), as on a cluster whose MaxArraySize is small
    args = _slurm_cli(suite.name, tmp_path, cache_dir, "--set", "cds.epochs=2", "--max-array-size", "3")
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "submitted 4 run(s) as 2 SLURM job array(s)" in out and "squeue -j" in out
    specs = plan(suite, assignments=["cds.epochs=2"])
    jobs = [slurm.recorded_job(s.run_dir(tmp_path)) for s in specs]
    arrays = sorted({j.split("_")[0] for j in jobs}, key=int)
    assert len(arrays) == 2 and sorted(j.split("_", 1)[-1] for j in jobs if j.startswith(arrays[0] + "_")) == \
        ["0", "1", "2"]
    # submitted again while in the queue: nothing is submitted twice
    assert cli.main(args) == 0
    again = capsys.readouterr().out
    assert "submitted" not in again and ("nothing to submit" in again or "0 to run" in again)
    _wait(lambda: all(store.run_status(s.run_dir(tmp_path)) == "done" for s in specs), "every run DONE", tmp_path)
    env = json.loads((specs[0].run_dir(tmp_path) / "env.json").read_text())
    assert env["slurm"]["SLURM_ARRAY_JOB_ID"] == jobs[0].split("_")[0] == arrays[0]
    assert cli.main(["--suite", suite.name, "--output", str(tmp_path), "--set", "cds.epochs=2", "--report"]) == 0
    table = capsys.readouterr().out
    assert "| CDS" in table and "Ph→Sk" in table and "Cl→Pa" in table and "–" not in table.split("| Method")[1]


@pytest.mark.slow
def test_a_refused_submission_says_why_and_leaves_no_run_folder(cluster, tmp_path, cache_dir, capsys):
    # a feature no node has: the resources fit, so only sbatch itself can refuse ("Invalid feature specification")
    tiny_suite("test_slurm_refused", methods=["pretrained"])
    assert cli.main(_slurm_cli("test_slurm_refused", tmp_path, cache_dir, "--slurm-constraint", "nosuchfeature")) == 2
    err = capsys.readouterr().err
    assert "sbatch refused the array of 1 run(s)" in err and "Invalid feature specification" in err
    assert '"slurm_constraint": "nosuchfeature"' in err
    assert not list((tmp_path / "runs").rglob("spec.json"))


def _submit_one_long_run(name: str, output: Path, cache_dir: Path, epochs: int):
    suite = tiny_suite(name, methods=["cds"])
    assignment = f"cds.epochs={epochs}"
    assert cli.main(_slurm_cli(suite.name, output, cache_dir, "--set", assignment)) == 0
    spec = plan(suite, assignments=[assignment])[0]
    run_dir = spec.run_dir(output)
    return suite, assignment, run_dir, slurm.recorded_job(run_dir)


def _restarts(job_id: str) -> int:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30).stdout
    return int(out.split("Restarts=", 1)[1].split()[0]) if "Restarts=" in out else 0


def _start_requeued(job_id: str, output: Path) -> None:
    """Slurm holds a requeued batch job for 121 s (Reason=BeginTime): make it eligible at once, as soon as it is
    pending again (an update while it is still completing does not hold)."""
    def started() -> bool:
        out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True,
                             timeout=30).stdout
        if "JobState=PENDING" in out:
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True,
                           timeout=30)
        return "JobState=RUNNING" in out or "JobState=COMPLETED" in out
    _wait(started, f"the requeued job {job_id} to run again", output, timeout=180)


@pytest.mark.slow
def test_a_killed_run_is_relaunched_and_resumes_from_its_checkpoint(cluster, tmp_path, cache_dir, capsys):
    suite, assignment, run_dir, job = _submit_one_long_run("test_slurm_kill", tmp_path, cache_dir, epochs=40)
    _wait(lambda: _checkpoint_epoch(run_dir) >= 2, "two epochs checkpointed", tmp_path)
    subprocess.run(["scancel", job], check=True, timeout=30)      # SIGTERM (submitit ignores it), SIGKILL 5 s later
    _wait(lambda: _job_gone(job), f"job {job} to leave the queue", tmp_path, timeout=120)
    killed_at = _checkpoint_epoch(run_dir)
    assert store.run_status(run_dir) == "incomplete" and 2 <= killed_at < 40
    capsys.readouterr()
    # the next invocation sees it incomplete (its job gone) and submits it again
    assert cli.main(_slurm_cli(suite.name, tmp_path, cache_dir, "--set", assignment)) == 0
    assert "1 incomplete" in capsys.readouterr().out
    assert slurm.recorded_job(run_dir) != job
    _wait(lambda: store.run_status(run_dir) == "done", "the relaunched run DONE", tmp_path)
    log = (run_dir / "log.txt").read_text()
    resumed = [line for line in log.splitlines() if "resumed from" in line]
    assert resumed and int(resumed[-1].rsplit(" ", 1)[1]) >= killed_at
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, 41))


@pytest.mark.slow
def test_a_timeout_signal_requeues_the_job_and_the_run_resumes(cluster, tmp_path, cache_dir):
    # SLURM sends USR2 before the time limit (submitit's --signal); sending it by hand simulates the timeout:
    # submitit checkpoints the call and requeues the same job, which resumes the run from its last epoch.
    _, _, run_dir, job = _submit_one_long_run("test_slurm_requeue", tmp_path, cache_dir, epochs=40)
    _wait(lambda: _checkpoint_epoch(run_dir) >= 2, "two epochs checkpointed", tmp_path)
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
    # Slurm holds a requeued batch job for 121 s (Reason=BeginTime); the test makes it eligible at once
    _wait(lambda: _restarts(job) >= 1, f"job {job} requeued", tmp_path, timeout=120)
    _start_requeued(job, tmp_path)
    _wait(lambda: store.run_status(run_dir) == "done", "the requeued run DONE", tmp_path)
    assert slurm.recorded_job(run_dir) == job                        # the same job, requeued, not a new one
    env = json.loads((run_dir / "env.json").read_text())
    assert int(env["slurm"].get("SLURM_RESTART_COUNT", "0")) >= 1
    assert "resumed from" in (run_dir / "log.txt").read_text()
    err = "\n".join(p.read_text() for p in (tmp_path / slurm.LOG_FOLDER).glob(f"{job}/*.err"))
    assert "Caught signal SIGUSR2" in err and "timed-out" in err
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, 41))


@pytest.mark.slow
def test_a_run_requeued_more_often_than_submitit_allows_ends_done(cluster, tmp_path, cache_dir, one_thread):
    # submitit requeues at most slurm_max_num_timeout (3) time-outs, and with --time <= 10 min it counts every USR2
    # as one: the fourth used to mark the run FAILED ("timed-out too many times"). A run that progresses in each
    # period now resumes as many times as it needs, and ends with the numbers of an undisturbed run.
    epochs, signals = 80, 5
    suite, assignment, run_dir, job = _submit_one_long_run("test_slurm_requeues", tmp_path, cache_dir, epochs)
    def starts() -> list:
        try:
            return json.loads((run_dir / "env.json").read_text())["starts"]
        except (OSError, ValueError, KeyError):
            return []

    signalled_at = []
    for period in range(1, signals + 1):
        # this period's process has resumed (env.json: its start) and finished an epoch of its own: signal it
        _wait(lambda: len(starts()) == period, f"period {period} to start", tmp_path)
        resumed_at = starts()[-1]["from_epoch"]
        signalled_at.append(_wait(lambda: max(_checkpoint_epoch(run_dir) - resumed_at, 0) and
                                  _checkpoint_epoch(run_dir), f"an epoch after epoch {resumed_at}", tmp_path))
        restarts = _restarts(job)
        subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
        _wait(lambda: _restarts(job) > restarts, f"job {job} requeued", tmp_path, timeout=120)
        _start_requeued(job, tmp_path)
        assert store.run_status(run_dir) != "failed", store.failure_reason(run_dir)
    _wait(lambda: store.run_status(run_dir) in ("done", "failed"), "the run DONE", tmp_path)
    assert store.run_status(run_dir) == "done", store.failure_reason(run_dir)
    assert signalled_at[-1] < epochs                         # every signal landed before the end
    err = "\n".join(p.read_text() for p in (tmp_path / slurm.LOG_FOLDER).glob(f"{job}/*.err"))
    assert err.count("this job is timed-out") >= signals    # submitit counted each as a time-out
    assert "timed-out too many times" not in err
    starts = json.loads((run_dir / "env.json").read_text())["starts"]
    assert len(starts) == signals + 1 and all(s["job"] == job for s in starts)
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))
    reference = run_one_undisturbed(plan(suite, assignments=[assignment])[0], tmp_path / "reference", cache_dir)
    assert store.read_metrics(run_dir) == reference


def run_one_undisturbed(spec, output: Path, cache_dir: Path) -> dict:
    from benchmark.runner import run_one
    from .conftest import prepared_run
    return run_one(prepared_run(spec, output, cache_dir))


def _signalled_task(tmp_path: Path, cache_dir: Path, time_limit_min: int, period_s: float, epochs_in_period: int,
                    built_in_period: int = 0):
    """A SlurmRun of a prepared run as its signal handler finds it: `period_s` into its period, having finished
    `epochs_in_period` epochs and built `built_in_period` cache entries in it."""
    from benchmark import runner
    from datasets import cache
    from .conftest import prepared_run
    spec = plan(tiny_suite("test_slurm_stall", methods=["cds"]))[0]
    spec_path = prepared_run(spec, tmp_path, cache_dir)
    task = slurm.SlurmRun(time_limit_min)
    task._period = (time.time() - period_s, runner.epochs_finished - epochs_in_period,
                    cache.entries_built - built_in_period)
    return task, spec_path


@pytest.fixture
def clear_interruption():
    from benchmark import runner
    yield
    runner.interruption = None


def test_a_time_limit_period_without_an_epoch_stops_the_run_with_its_reason(tmp_path, cache_dir,
                                                                            clear_interruption):
    from benchmark import runner
    # cut by the time limit (the signal 9 min into a 10 min period), no epoch finished, nothing built: FAILED, no
    # requeue, and the reason says what to do
    task, spec_path = _signalled_task(tmp_path / "a", cache_dir, 10, period_s=540, epochs_in_period=0)
    runner.position = (3, 40)
    assert task.checkpoint(str(spec_path)) is None
    reason = store.failure_reason(spec_path.parent)
    assert "stopped at the time limit" in reason and "(--time 10) finished no epoch" in reason
    assert "stands at epoch 3 of 40" in reason and "longer --time and --retry-failed" in reason
    assert runner.interruption == reason
    # the same period with one epoch finished, or a cache entry built (the first period of a cold cache): requeued
    for epochs, built in ((1, 0), (0, 1)):
        task, spec_path = _signalled_task(tmp_path / f"b{epochs}{built}", cache_dir, 10, 540, epochs, built)
        again = task.checkpoint(str(spec_path))
        assert again is not None and again.args == (str(spec_path),) and again.function is task
        assert store.run_status(spec_path.parent) == "incomplete"
    # a preemption (the signal 2 min into a 60 min period) requeues whatever the progress
    task, spec_path = _signalled_task(tmp_path / "c", cache_dir, 60, period_s=120, epochs_in_period=0)
    assert task.checkpoint(str(spec_path)) is not None and "a preemption" in runner.interruption
    assert store.run_status(spec_path.parent) == "incomplete"


@pytest.mark.slow
def test_a_run_that_another_process_trains_is_not_submitted(cluster, tmp_path, cache_dir, capsys, clean_registries):
    # A local launch holds the run; submitting the same suite to SLURM leaves it to that launch, naming it.
    import signal as signals

    from .test_run_lock import launch, lock_suite, the_run_dir
    cache = tmp_path / "cache"
    shutil.copytree(cache_dir / "synthetic", cache / "synthetic")
    suite = lock_suite(tmp_path, "lock_slurm")
    output = tmp_path / "out"
    holder = launch(suite, output, cache)
    run_dir = the_run_dir(suite, output)
    try:
        _wait(lambda: store.run_holder(run_dir) is not None, "the local launch to hold the run", output)
        assert cli.main(["--suite", str(suite), "--output", str(output), "--cache-dir", str(cache), "--device",
                         "cpu", "--launcher", "slurm", "--cpus", "1", "--time", "10"]) == 0
        out = capsys.readouterr().out
        assert "1 running" in out and f"pid {holder.pid}" in out and "submitted" not in out
        assert slurm.recorded_job(run_dir) is None
    finally:
        os.killpg(holder.pid, signals.SIGKILL)
        holder.communicate(timeout=60)


def test_ci_requires_the_cluster_tests():
    # .ci/run exports CDR_REQUIRE_SLURM=1 after starting the cluster: the cluster tests above then fail, not skip.
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "CDR_REQUIRE_SLURM=1" in ci and "setup_local_slurm.sh" in ci


# --- where users submit from, what they ask for, and tasks that die at their start --------------------------------

def quickstart_cache(tmp_path: Path, cache_dir: Path) -> Path:
    """A cache folder where the quickstart's backbone is already "pretrained" (the tests' one-epoch SimCLR state,
    under the quickstart's name): a built-in suite then runs in seconds, as a separate process needs."""
    from benchmark.backbone_specs import QUICKSTART_BACKBONE
    from benchmark.initialisation import _init_key, cached_simclr_state

    from .conftest import TINY_BACKBONE
    cache = tmp_path / "cache"
    shutil.copytree(cache_dir / "synthetic", cache / "synthetic")
    state = cached_simclr_state(TINY_BACKBONE, cache_dir, None, torch.device("cpu"))
    store.atomic_torch_save(cache / "backbones" / f"small_cnn-simclr-{_init_key(QUICKSTART_BACKBONE)}.pt", state)
    return cache


@pytest.mark.slow
def test_a_suite_submitted_from_inside_a_slurm_job_runs(cluster, tmp_path, cache_dir):
    # A driver job (an array task with --mem-per-cpu, as sites that forbid compute on login nodes have users do)
    # submits a suite. Its SLURM_MEM_PER_CPU and SLURM_ARRAY_* used to leak into the tasks: every srun died with
    # "SLURM_MEM_PER_CPU, SLURM_MEM_PER_GPU, and SLURM_MEM_PER_NODE are mutually exclusive".
    cache = quickstart_cache(tmp_path, cache_dir)
    output = tmp_path / "out"
    repo = Path(__file__).resolve().parent.parent
    driver = tmp_path / "driver.sh"
    driver.write_text(f"#!/bin/bash\ncd {repo}\n{sys.executable} run_benchmark.py --suite quickstart --methods "
                      f"pretrained --pairs Ph-Sk --seeds 2024 --output {output} --cache-dir {cache} --device cpu "
                      f"--launcher slurm --cpus 1 --mem 1 --time 10\n")
    submitted = subprocess.run(["sbatch", "--parsable", "--array=0", "--mem-per-cpu=200", "--cpus-per-task=1",
                                "-o", str(tmp_path / "driver.out"), "-e", str(tmp_path / "driver.err"), str(driver)],
                               capture_output=True, text=True, timeout=60, check=True)
    driver_job = submitted.stdout.strip().split(";")[0]
    _wait(lambda: _job_gone(f"{driver_job}_0") and _job_gone(driver_job), "the driver job to end", tmp_path)
    assert "submitted 1 run(s)" in (tmp_path / "driver.out").read_text(), (tmp_path / "driver.err").read_text()
    run_dirs = list((output / "runs").rglob("spec.json"))
    assert len(run_dirs) == 1
    _wait(lambda: store.run_status(run_dirs[0].parent) == "done", "the driver's run DONE", output)
    err = "\n".join(p.read_text() for p in (output / slurm.LOG_FOLDER).rglob("*.err"))
    assert "mutually exclusive" not in err


@pytest.mark.slow
def test_a_request_no_node_can_meet_is_refused_before_submission(cluster, tmp_path, cache_dir, capsys):
    # This cluster's one node has 2 CPUs and no GPU: --cpus 64 would stay PENDING for ever (Reason=PartitionConfig).
    tiny_suite("test_slurm_too_big", methods=["pretrained"])
    args = ["--suite", "test_slurm_too_big", "--output", str(tmp_path), "--cache-dir", str(cache_dir),
            "--launcher", "slurm", "--time", "10"]
    assert cli.main(args + ["--cpus", "64"]) == 2
    err = capsys.readouterr().err
    assert "no node of partition 'debug' can run a task asking for 64 CPU(s), 0 GPU(s)" in err
    assert "offer at most 2 CPU(s)" in err and "Nothing was submitted" in err
    assert cli.main(args + ["--cpus", "1", "--partition", "nope"]) == 2
    assert "--partition nope: no such partition on this cluster (partitions: debug)" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("spec.json"))


@pytest.mark.slow
def test_a_queued_run_shows_why_it_waits(cluster, tmp_path, cache_dir, capsys):
    tiny_suite("test_slurm_held", methods=["pretrained"])
    assert cli.main(_slurm_cli("test_slurm_held", tmp_path, cache_dir, "--sbatch", "hold")) == 0
    run_dir = plan(tiny_suite("test_slurm_held"))[0].run_dir(tmp_path)
    job = slurm.recorded_job(run_dir)
    try:
        capsys.readouterr()
        assert cli.main(_slurm_cli("test_slurm_held", tmp_path, cache_dir, "--dry-run")) == 0
        out = capsys.readouterr().out
        assert f"job {job} (PENDING: JobHeldUser)" in out and "1 queued" in out
    finally:
        subprocess.run(["scancel", job], timeout=30)


@pytest.mark.slow
def test_a_task_that_dies_at_its_start_is_reported_then_failed(cluster, tmp_path, cache_dir, capsys):
    # The task's setup fails before the run starts (no log.txt): the dry run shows the job's state and its stderr;
    # after three such deaths in a row the run is FAILED with that stderr, not submitted again.
    tiny_suite("test_slurm_dies", methods=["pretrained"])
    profile = tmp_path / "site.toml"
    profile.write_text('setup = ["echo \'module: cuda/12.9 not found on this node\' >&2", "exit 3"]\n')
    args = _slurm_cli("test_slurm_dies", tmp_path, cache_dir, "--slurm-profile", str(profile))
    run_dir = plan(tiny_suite("test_slurm_dies"))[0].run_dir(tmp_path)
    jobs = []
    for attempt in range(1, 4):
        assert cli.main(args) == 0
        assert "submitted 1 run(s)" in capsys.readouterr().out
        jobs.append(slurm.recorded_job(run_dir))
        _wait(lambda: _job_gone(jobs[-1]), f"job {jobs[-1]} to end", tmp_path, timeout=120)
        assert not (run_dir / "log.txt").exists()
        assert cli.main(args + ["--dry-run"]) == 0
        out = capsys.readouterr().out
        assert f"job {jobs[-1]}" in out and "the job ended before the run started" in out
        assert "module: cuda/12.9 not found on this node" in out
    # The third death is counted: FAILED, nothing submitted; exit 1, as for any failed run behind the tables.
    assert cli.main(args) == 1
    out = capsys.readouterr().out
    assert "1 failed" in out and "submitted" not in out
    reason = store.failure_reason(run_dir)
    assert "ended before the run started, 3 times in a row" in reason and all(job in reason for job in jobs)
    assert "module: cuda/12.9 not found on this node" in reason


@pytest.mark.slow
def test_a_plugin_method_runs_on_the_cluster(cluster, tmp_path, cache_dir, capsys):
    # docs/extending.md's example method, as a file outside the repository: the SLURM task imports it again
    # (launch.json).
    from methods import plugins
    from methods.registry import REGISTRY
    plugin = tmp_path / "lab" / "my_method.py"
    plugin.parent.mkdir()
    shutil.copy(Path(__file__).resolve().parent.parent / "examples" / "my_method.py", plugin)
    suite = tiny_suite("test_slurm_plugin", methods=["pretrained"])
    args = _slurm_cli(suite.name, tmp_path, cache_dir, "--plugin", str(plugin), "--methods", "mymethod",
                      "--set", "mymethod.epochs=1")
    try:
        assert cli.main(args) == 0
        assert "submitted 1 run(s)" in capsys.readouterr().out
        spec = plan(suite, methods=["mymethod"], assignments=["mymethod.epochs=1"])[0]
        _wait(lambda: store.run_status(spec.run_dir(tmp_path)) == "done", "the plugin's run DONE", tmp_path)
        assert cli.main(args + ["--report"]) == 0
        assert "| MyMethod" in capsys.readouterr().out
    finally:
        REGISTRY.pop("mymethod", None)
        plugins._LOADED.pop(str(plugin.resolve()), None)


@pytest.mark.slow
def test_a_suite_file_with_a_folder_dataset_and_a_plugin_runs_on_the_cluster(cluster, toys, tmp_path, capsys,
                                                                              clean_registries):
    # docs/extending.md's suite file, made outside the repository: each SLURM task loads it again (launch.json) for its
    # folder dataset and its plugin method; the first task pretrains the shared init, the other waits for it.
    args = ["--suite", str(toys), "--output", str(tmp_path / "results"), "--launcher", "slurm", "--cpus", "1",
            "--time", "10", "--device", "cpu", "--methods", "pretrained", "mymethod", "--seeds", "1",
            "--pairs", "Ph-Dr"]
    assert cli.main(args) == 0
    assert "submitted 2 run(s)" in capsys.readouterr().out
    from benchmark.suites import load_suite_file
    specs = plan(load_suite_file(toys), methods=["pretrained", "mymethod"], seeds=[1], pairs=["Ph-Dr"])
    _wait(lambda: all(store.run_status(s.run_dir(tmp_path / "results")) == "done" for s in specs),
          "both runs of the suite file DONE", tmp_path / "results")
    assert cli.main(args + ["--report"]) == 0
    assert "| MyMethod" in capsys.readouterr().out
