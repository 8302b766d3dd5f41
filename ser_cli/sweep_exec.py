"""`ser sweep FILE --executor local|slurm`: every grid point one submitit job, on this machine or on SLURM.

A point's job runs its commands (`ser train` then `ser evaluate`, see `ser_cli.sweep_grid` and
`ser_cli.sweep_pipeline`) as subprocesses `python -m ser_cli ...` in the submitting folder, their output in
`OUT/logs/NAME/job.log`, submitit's own files (the pickled job, its stdout/stderr, by job id) in
`OUT/logs/submitit/`. It
sets `SER_EXECUTOR` and `SER_JOB_ID` (recorded in each run's provenance) and, for jobs with GPUs,
`SER_DEVICE=cuda:auto`. A finished point leaves `OUT/logs/NAME/done.json` (its commands); a rerun of the same
sweep skips every point whose commands are unchanged and whose outputs hold `metrics.json`.

Requeue and resume: `ser train` and `ser evaluate` continue from their checkpoints when rerun with the same command,
so a job needs no state of its own. On preemption or time-out SLURM sends submitit's signal (USR2, 90 s before the
limit) to the job; submitit calls `PointJob.checkpoint`, which sends SIGTERM to the running command (it writes its
checkpoint at the next step and exits) and hands back the same job, which submitit requeues. The commands ignore
USR2 themselves (SLURM signals every process of the job) and get SIGTERM if the job process dies under them.

The sweep file's `executor:` section (or flags) sets the job options: submitit's generic names (`timeout_min`,
`gpus_per_node`, `cpus_per_task`, `mem_gb`, `nodes`, `tasks_per_node`) and SLURM's (`partition`, `account`, `qos`,
`constraint`, `array_parallelism`, ...; `slurm_` prefixes optional). The local executor reads `timeout_min`,
`gpus_per_node` and `signal_delay_s` and ignores the rest.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from ser_cli.runtime.errors import RunFailure, UserError
from ser_cli.runtime.progress import log
from ser_cli.runtime.yaml_files import load_yaml_file
from ser_cli.sweep_grid import GridPoint, grid_points, is_grid_file

GENERIC = {"timeout_min", "gpus_per_node", "cpus_per_task", "mem_gb", "nodes", "tasks_per_node", "name"}
LOCAL = {"timeout_min", "gpus_per_node", "signal_delay_s"}
DEFAULT_TIMEOUT_MIN = {"local": 7 * 24 * 60, "slurm": 4 * 60}  # submitit's own defaults (2 and 5 min) kill runs
STOP_WAIT_S = 60.0  # how long a checkpointing command may take to stop (SLURM signals 90 s before the limit)
POLL_S = 0.2


@dataclass
class Sweep:
    """What a sweep file runs outside DVC: its points, where they write, what makes their inputs, the job options."""

    out: Path
    points: list[GridPoint]
    prepare: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    grid: bool = True  # a grid file (its report pairs SER with plain runs)


def load(path: Path, out: Path | None = None) -> Sweep:
    """The sweep or grid file `path` as points (`out` replaces the file's output folder).

    Raises:
        UserError: a malformed file, or a `set:` sweep whose pipeline cannot run outside DVC.
    """
    from ser_cli.sweep import load_sweep
    from ser_cli.sweep_pipeline import pipeline_points

    spec = load_yaml_file(path, "sweep file")
    options = spec.get("executor") or {} if isinstance(spec, dict) else {}
    if not isinstance(options, dict):
        raise UserError(f"{path}: executor: a mapping of job options (partition: gpu, timeout_min: 240, ...)")
    if is_grid_file(spec):
        folder, points = grid_points(spec, path, out)
        prepare = spec.get("prepare") or []
        if not isinstance(prepare, list) or not all(isinstance(c, str) for c in prepare):
            raise UserError(f"{path}: prepare: a list of shell commands")
        return Sweep(folder, points, prepare, options, grid=True)
    experiments = load_sweep(path)
    folder = out or Path(str(spec.get("out") or Path("sweeps") / spec["name"]))
    return Sweep(folder, pipeline_points(experiments, folder, Path.cwd()), [], options, grid=False)


class PointJob(submitit.helpers.Checkpointable):
    """The job of one grid point: its commands in turn; requeued with the same point on preemption or time-out."""

    def __init__(self, executor: str, cwd: str, logs: str, gpus: bool, launcher: tuple[str, ...]) -> None:
        self.executor, self.cwd, self.logs, self.gpus, self.launcher = executor, cwd, logs, gpus, launcher
        self._proc: subprocess.Popen[bytes] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_proc"}  # a process does not travel

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _proc=None)

    def __call__(self, point: GridPoint) -> str:
        folder = Path(self.cwd) / self.logs / point.name
        folder.mkdir(parents=True, exist_ok=True)
        env = self._env()
        with (folder / "job.log").open("a") as out:
            for args in point.commands:
                cmd = [sys.executable, *self.launcher, *args]
                out.write(f"$ SER_JOB_ID={env['SER_JOB_ID']} {shlex.join(cmd)}\n")
                out.flush()
                code = self._run(cmd, out, env)
                if code != 0:
                    raise RunFailure(f"{point.name}: `ser {shlex.join(args[:2])}` exited {code}; see "
                                     f"{folder / 'job.log'}")
        (folder / "done.json").write_text(json.dumps({"commands": [list(c) for c in point.commands]}, indent=1))
        return point.name

    def checkpoint(self, point: GridPoint) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on preemption or time-out: the running command checkpoints and stops, then the same
        job is requeued (rerun, its commands resume from their checkpoints)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            if not _wait_exit(proc.pid, STOP_WAIT_S):
                proc.kill()
        return submitit.helpers.DelayedSubmission(self, point)

    def _env(self) -> dict[str, str]:
        env = {**os.environ, "SER_EXECUTOR": self.executor, "SER_JOB_ID": submitit.JobEnvironment().job_id}
        if self.gpus:
            env.setdefault("SER_DEVICE", "cuda:auto")
        return env

    def _run(self, cmd: list[str], out: Any, env: dict[str, str]) -> int:
        self._proc = subprocess.Popen(cmd, cwd=self.cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                      preexec_fn=_child_signals)
        try:
            # poll, not wait(): a blocking wait holds the lock the checkpoint handler (same thread) would need
            while (code := self._proc.poll()) is None:
                time.sleep(POLL_S)
            return code
        finally:
            if self._proc.poll() is None:  # the job itself is stopping (SIGINT from a cancel): let the run checkpoint
                self._proc.send_signal(signal.SIGTERM)
                if not _wait_exit(self._proc.pid, STOP_WAIT_S):
                    self._proc.kill()
            self._proc = None


def _child_signals() -> None:
    """In a command's process before exec: ignore submitit's USR2 (meant for the job, which then stops the command
    with SIGTERM), and get SIGTERM when the job process dies (Linux), so a killed job leaves no orphan training."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _wait_exit(pid: int, seconds: float) -> bool:
    """Whether child `pid` exited within `seconds` (reaped here: Popen's own wait may be blocked in this thread)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] != 0:
                return True
        except ChildProcessError:
            return True
        time.sleep(POLL_S)
    return False


def is_complete(point: GridPoint, logs: Path) -> bool:
    """The point ran to the end with these commands and its outputs are still there."""
    done = logs / point.name / "done.json"
    try:
        commands = json.loads(done.read_text())["commands"]
    except (OSError, ValueError, KeyError):
        return False
    return commands == [list(c) for c in point.commands] and all((o / "metrics.json").is_file()
                                                                  for o in point.outputs)


def executor_parameters(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """submitit parameters of `kind` from the sweep file's `executor:` options (and flags)."""
    options = {k: v for k, v in options.items() if v is not None}
    if kind == "local":
        params = {k: v for k, v in options.items() if k in LOCAL}
        params.setdefault("timeout_min", DEFAULT_TIMEOUT_MIN["local"])
        if "gpus_per_node" not in params:  # submitit's default (0) would hide this machine's GPUs from the jobs
            params.update(_visible_gpus())
        return params
    params = {k if k in GENERIC or k.startswith("slurm_") else f"slurm_{k}": v for k, v in options.items()}
    params.setdefault("timeout_min", DEFAULT_TIMEOUT_MIN["slurm"])
    return params


def _visible_gpus() -> dict[str, Any]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [g for g in visible.split(",") if g.strip()]
        return {"gpus_per_node": len(ids), "visible_gpus": tuple(ids)} if ids else {"gpus_per_node": 0}
    return {"gpus_per_node": len(list(Path("/dev").glob("nvidia[0-9]*")))}


def make_executor(kind: str, folder: Path, params: dict[str, Any]) -> submitit.Executor:
    """submitit's LocalExecutor or its SLURM executor (through AutoExecutor) with `params`.

    Raises:
        UserError: an option submitit does not know, or `slurm` where SLURM is not installed.
    """
    try:
        if kind == "local":
            executor: submitit.Executor = submitit.LocalExecutor(folder=folder)
        else:
            executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(**params)
    except (NameError, ValueError, TypeError, AssertionError) as err:
        raise UserError(f"executor: {str(err).splitlines()[0]}") from None
    except RuntimeError as err:  # submitit: 'Could not detect "srun"'
        raise UserError(f"--executor {kind}: {err}") from None
    return executor


def prepare(commands: list[str]) -> None:
    """The grid's `prepare` shell commands, in order, here (`ser` on the PATH is this interpreter's).

    Raises:
        RunFailure: a command failed.
    """
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for cmd in commands:
        log(f"$ {cmd}")
        if subprocess.call(cmd, shell=True, env=env) != 0:
            raise RunFailure(f"prepare step failed: {cmd}")


def run_points(executor: submitit.Executor, job: PointJob, points: list[GridPoint], slots: int,
               on_done: Callable[[GridPoint, str], None]) -> list[str]:
    """Submit one job per point, at most `slots` running at once, and wait for all; returns the failures' lines."""
    pending, running, failed = list(points), [], []
    while pending or running:
        while pending and len(running) < slots:
            point = pending.pop(0)
            running.append((point, executor.submit(job, point)))
        time.sleep(POLL_S)
        for point, submitted in [r for r in running if r[1].done()]:
            running.remove((point, submitted))
            if is_complete(point, Path(job.cwd) / job.logs):
                on_done(point, submitted.job_id)
                continue
            reason = _failure(submitted) or f"job {submitted.job_id} ended without finishing"
            failed.append(f"{point.name}: {reason}")
    return failed


def wait_array(array: list[Any], job: PointJob, points: list[GridPoint],
               on_done: Callable[[GridPoint, str], None]) -> list[str]:
    """Wait for a submitted job array; returns the failures' lines."""
    while not all(j.done() for j in array):
        time.sleep(30)  # submitit caches SLURM's job states and refreshes them at most this often anyway
    failed = []
    for point, submitted in zip(points, array, strict=True):
        if is_complete(point, Path(job.cwd) / job.logs):
            on_done(point, submitted.job_id)
        else:
            failed.append(f"{point.name}: {_failure(submitted) or f'job {submitted.job_id} ended without finishing'}")
    return failed


def run_sweep(sweep: Sweep, points: list[GridPoint], kind: str, params: dict[str, Any], slots: int = 2,
              wait: bool = True, launcher: tuple[str, ...] = ("-m", "ser_cli")) -> tuple[dict[str, str], list[str]]:
    """Run (local) or submit (slurm: one job array; with `wait`, wait for it) the points that are not complete.

    `launcher` is what runs a command's arguments after the interpreter (`-m ser_cli`; the tests wrap it in their
    fault injection). Returns each point's status and the failures' lines.
    """
    logs = sweep.out / "logs"
    status = {p.name: "complete" for p in points if is_complete(p, logs)}
    for name in status:
        log(f"{name}: already complete")
    todo = [p for p in points if p.name not in status]
    if not todo:
        return status, []
    prepare(sweep.prepare)
    job = PointJob(kind, str(Path.cwd()), str(logs), int(params.get("gpus_per_node") or 0) > 0, launcher)
    executor = make_executor(kind, logs / "submitit", params)

    def finished(point: GridPoint, job_id: str) -> None:
        status[point.name] = "finished"
        log(f"{point.name}: finished (job {job_id})")

    if kind == "local":
        return status, run_points(executor, job, todo, slots, finished)
    array = executor.map_array(job, todo)  # one job array; slurm_array_parallelism bounds how many run at once
    for point, submitted in zip(todo, array, strict=True):
        status[point.name] = f"submitted {submitted.job_id}"
        log(f"{point.name}: submitted (job {submitted.job_id})")
    return status, wait_array(array, job, todo, finished) if wait else []


def _failure(submitted: Any) -> str:
    """The job's own error line, when it left one (a killed job leaves none)."""
    if not submitted.paths.result_pickle.exists():
        return ""
    err = submitted.exception()
    return str(err).strip().splitlines()[-1] if err else ""


def report(sweep: Sweep, points: list[GridPoint]) -> Path | None:
    """`ser compare` of the finished points' evaluations into OUT/report (with --pairs for a grid file)."""
    evals = [str(e) for p in points for e in p.evals if (e / "metrics.json").is_file()]
    if not evals:
        return None
    out = sweep.out / "report"
    cmd = [sys.executable, "-m", "ser_cli", "-q", "compare", *evals, "--out", str(out), "--overwrite",
           *(["--pairs"] if sweep.grid else [])]
    return out if subprocess.call(cmd, stdout=sys.stderr) == 0 else None  # stdout stays for --json
