"""Run one contender in its own process and measure it: wall, CPU, peak RSS.

* wall: ``time.perf_counter`` around the child, from spawn to reap;
* CPU: user + sys of the child *and its reaped descendants*, from ``os.wait4`` on the
  child (the kernel folds waited-for grandchildren into the child's counts);
* peak RSS: the largest of (a) the summed RSS of the child's process tree, polled with
  psutil every ``poll_s``, (b) the per-process high-water mark ``VmHWM`` of any process of
  the tree, read at each poll, (c) the maximum RSS that ``/usr/bin/time`` reports for the
  command (it wraps the command when installed). (b) and (c) are exact for one process;
  (a) covers several processes alive at once. Not ``ru_maxrss`` from our own ``wait4``:
  Linux folds the pre-exec image of the forked child (a copy of this big pytest process)
  into it.

The PostgreSQL server's own CPU and memory are not counted (it is not a child).

A run past ``timeout_s`` is killed (its whole process group, which we created), and so is a
run that brings the machine's available memory under ``min_available`` bytes, so a
contender that cannot cope with a scale fails instead of taking the machine down.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

#: GNU time: measures the maximum RSS of the command it runs (exactly, via its own wait4).
TIME_BIN = "/usr/bin/time"
#: Kill a contender when the machine has less memory available than this.
DEFAULT_MIN_AVAILABLE = 1 << 30


@dataclass(frozen=True)
class Measurement:
    """One measured run of one contender."""

    wall_s: float
    cpu_s: float
    user_s: float
    sys_s: float
    peak_rss_bytes: int
    returncode: int
    #: "" when the child ended on its own, else why we killed it ("timeout", "memory").
    killed: str
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        """The child exited 0 on its own."""
        return self.returncode == 0 and not self.killed

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (without the output file paths)."""
        data = asdict(self)
        data.pop("stdout")
        data.pop("stderr")
        return data

    def describe_failure(self) -> str:
        """A short message: why the run failed, with the tail of its stderr."""
        if self.killed == "timeout":
            head = f"killed after the timeout ({self.wall_s:.0f} s)"
        elif self.killed == "memory":
            head = f"killed: the machine ran low on memory (peak RSS {self.peak_rss_bytes / 2**30:.1f} GiB)"
        else:
            head = f"exit code {self.returncode}"
        tail = _tail(Path(self.stderr)) or _tail(Path(self.stdout))
        return f"{head}; stderr tail:\n{tail}" if tail else head


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _time_maxrss(path: Path) -> int:
    """The maximum RSS (bytes) /usr/bin/time wrote, 0 if none."""
    try:
        lines = path.read_text().split()
        return int(lines[-1]) * 1024 if lines else 0
    except (OSError, ValueError):
        return 0


def _hwm_bytes(pid: int) -> int:
    """VmHWM (peak resident set size) of one process, 0 if unreadable."""
    try:
        with Path(f"/proc/{pid}/status").open(encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


class _Monitor(threading.Thread):
    """Poll the child's process tree for RSS; kill it on timeout or low memory."""

    def __init__(self, pid: int, poll_s: float, timeout_s: float | None, min_available: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.min_available = min_available
        self.stop = threading.Event()
        self.peak_sum = 0
        self.peak_hwm = 0
        self.killed = ""
        self.started = time.perf_counter()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.stop.is_set():
            self._sample(root)
            if self.timeout_s is not None and time.perf_counter() - self.started > self.timeout_s:
                self._kill("timeout")
                return
            if psutil.virtual_memory().available < self.min_available:
                self._kill("memory")
                return
            self.stop.wait(self.poll_s)

    def _sample(self, root: psutil.Process) -> None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for proc in tree:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
            self.peak_hwm = max(self.peak_hwm, _hwm_bytes(proc.pid))
        self.peak_sum = max(self.peak_sum, total)

    def _kill(self, why: str) -> None:
        self.killed = why
        # The child leads its own process group (start_new_session): end exactly that group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


def run_measured(
    argv: Sequence[str],
    *,
    log_prefix: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    poll_s: float = 0.1,
    min_available: int = DEFAULT_MIN_AVAILABLE,
) -> Measurement:
    """Run ``argv`` to completion (or until killed) and measure it.

    stdout and stderr go to ``<log_prefix>.out`` / ``.err``.
    """
    log_prefix.parent.mkdir(parents=True, exist_ok=True)
    out_path = log_prefix.with_name(log_prefix.name + ".out")
    err_path = log_prefix.with_name(log_prefix.name + ".err")
    time_path = log_prefix.with_name(log_prefix.name + ".time")
    time_path.unlink(missing_ok=True)
    command = list(argv)
    if os.access(TIME_BIN, os.X_OK):
        command = [TIME_BIN, "-f", "%M", "-o", str(time_path), *command]
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
        monitor = _Monitor(proc.pid, poll_s, timeout_s, min_available)
        monitor.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            # Interrupted (Ctrl-C): do not leave the contender running.
            monitor._kill("interrupted")
            proc.wait()
            raise
        wall = time.perf_counter() - started
        monitor.stop.set()
        monitor.join()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    peak = max(monitor.peak_sum, monitor.peak_hwm, _time_maxrss(time_path))
    return Measurement(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        peak_rss_bytes=peak,
        returncode=proc.returncode,
        killed=monitor.killed,
        stdout=str(out_path),
        stderr=str(err_path),
    )


def phases_from_stdout(stdout: str) -> dict[str, float]:
    """The contenders' own 'seconds: extract 1.2, transform 0.3, load 0.4' line."""
    match = re.search(r"seconds: (.*)$", stdout, flags=re.MULTILINE)
    if not match:
        return {}
    return {k: float(v) for k, v in (part.split() for part in match.group(1).split(", "))}
