"""Helpers both benchmark scripts use: stopping every child process, reading the machine's CPU
counters, waiting on a result queue. Imported as ``bench.bench_common``: the scripts take their
own directory off sys.path (bench/transitions.py would shadow the transitions library) and put
the repository root on it."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any


class Children:
    """Every process this script started, so that they are stopped whatever happens."""

    def __init__(self) -> None:
        self.procs: list[mp.process.BaseProcess] = []

    def add(self, proc: mp.process.BaseProcess) -> mp.process.BaseProcess:
        self.procs.append(proc)
        return proc

    def stop_all(self, timeout: float = 10.0) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            proc.join(timeout)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        self.procs.clear()


def _machine_cpu() -> list[int] | None:
    try:
        line = Path("/proc/stat").read_text().splitlines()[0]
    except OSError:
        return None
    return [int(x) for x in line.split()[1:9]]


def _get(q: Any, timeout: float, what: str) -> Any:
    try:
        return q.get(timeout=timeout)
    except Exception:
        raise RuntimeError(f"timed out waiting for {what}") from None
