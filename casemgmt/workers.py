"""`casemgmt serve --workers N`: N server processes, each with a listening socket of its own.

uvicorn's own supervisor binds one socket in the parent and hands that same socket to every
worker: the workers race for each new connection, and the one that wakes first takes the whole
burst. In bench/load.py (20 users opening their connections at once against two workers) one
worker held all but one of the client connections, so the service ran on one CPU while the other
waited; the HTTP step actions of bench/transitions.py ran at the rate of one worker. Here each
worker binds its own socket to the address with ``SO_REUSEPORT`` (Linux), and the kernel spreads
new connections over the sockets by a hash of their addresses.

The parent holds the address (bound, never listening, so no connection waits in it) for as long
as it runs, so a second server on the same port is refused at start as before. It restarts a
worker that dies; a worker that cannot start (the app's start-up refuses, the address is taken)
stops the service instead of restarting for ever. SIGTERM or SIGINT is passed to every worker,
which finishes its requests (uvicorn's graceful shutdown), and the parent waits for them.
Where ``SO_REUSEPORT`` does not balance (not Linux), :func:`serve` leaves the work to uvicorn.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from typing import Any

logger = logging.getLogger("casemgmt.workers")

APP = "casemgmt.app:app_from_environment"
STARTUP_FAILURE = 3  # uvicorn's exit code for a worker that could not start
_CHECK_SECONDS = 0.5


def balanced() -> bool:
    """The kernel spreads connections over sockets sharing a port (Linux's SO_REUSEPORT)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def shared_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` that other sockets of this user may bind too."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def hold_address(host: str, port: int) -> socket.socket:
    """The parent's hold on the address. A plain bind first: a server already listening there
    (with or without SO_REUSEPORT) makes it fail, as a single shared socket would."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        if port == 0:
            port = probe.getsockname()[1]
    return shared_port_socket(host, port)


def _worker(host: str, port: int, options: dict[str, Any]) -> None:
    """One worker process: its own socket on the shared address, then uvicorn on it."""
    import uvicorn

    try:
        sock = shared_port_socket(host, port)
    except OSError as exc:
        print(f"casemgmt serve: worker {os.getpid()} cannot bind {host}:{port}: {exc}", file=sys.stderr)
        sys.exit(STARTUP_FAILURE)
    server = uvicorn.Server(uvicorn.Config(APP, factory=True, **options))
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def run(held: socket.socket, host: str, workers: int, options: dict[str, Any]) -> int:
    """Serve on the address ``held`` (see :func:`hold_address`) with ``workers`` processes until
    SIGTERM or SIGINT; 0, or 1 when a worker could not start. ``options``: uvicorn.Config
    settings (logging, time-outs) for every worker."""
    port = held.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def start() -> multiprocessing.process.BaseProcess:
        process = context.Process(target=_worker, args=(host, port, options), name="casemgmt-worker")
        process.start()
        return process

    failed = False
    processes = [start() for _ in range(workers)]
    logger.info("serving on %s:%d with %d workers, one socket each", host, port, workers)
    try:
        while not stop.wait(_CHECK_SECONDS):
            for i, process in enumerate(processes):
                if process.is_alive():
                    continue
                process.join()
                if process.exitcode == STARTUP_FAILURE:
                    logger.error("worker %s could not start; stopping", process.pid)
                    failed = True
                    stop.set()
                    break
                logger.warning("worker %s ended (exit code %s); starting another", process.pid,
                               process.exitcode)
                processes[i] = start()
    finally:
        # SIGTERM also after a Ctrl-C: the terminal sent SIGINT to every worker already, and a
        # second SIGINT would make uvicorn drop the requests in flight.
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        for process in processes:
            process.join()
        held.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if failed else 0
