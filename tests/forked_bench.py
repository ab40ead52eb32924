"""`bench` processes forked from one that has imported it already, for tests that start many runs.

A test that kills `bench run` twenty times needs twenty real processes, but each fresh interpreter
spends seconds importing torch and timm before its run starts (on the slow 2-core machine, ~8 s of a
~12 s run). :class:`Launcher` starts one process that imports the CLI and what a run's workers preload
(:func:`biasbench.harness.process_start.preload`), then forks a child per :meth:`Launcher.bench`: the
child is a process of its own (its PID is the run's PID in the database, ``SIGKILL`` ends it mid-write
exactly as it ends a `bench run` started from a shell) that runs ``bench ARGS`` in ``cwd`` and exits
with the command's exit code. Its stderr is a named pipe the test reads line by line; its stdout and
stdin are ``/dev/null``. The launcher never runs a torch operation, so no thread pool is copied into a
child (as the run's own fork server, ``harness/process_start.py``).

The launcher is one thread: it waits for a request or a child's exit (``select`` with a short timeout,
``waitpid(WNOHANG)``), so a fork never copies a lock another thread holds.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

#: how often the launcher looks for children that ended while no request came (s)
REAP_EVERY = 0.02


class ForkedRun:
    """One forked `bench` child: a :class:`subprocess.Popen`-like ``pid``, ``poll()``, ``wait()`` and
    ``stderr`` (text, line-buffered reads until the child and its descendants close it)."""

    def __init__(self, launcher: Launcher, pid: int, stderr: IO[str]) -> None:
        self.launcher, self.pid, self.stderr = launcher, pid, stderr

    def poll(self) -> int | None:
        return self.launcher.exit_code(self.pid)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.launcher.ended:
            while (rc := self.launcher.exit_code(self.pid)) is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(f"bench (pid {self.pid})", timeout or 0)
                self.launcher.ended.wait(left)
        return rc


class Launcher:
    """The launcher process, started with ``env`` (every child inherits it); use as a context manager."""

    def __init__(self, env: dict[str, str], fifo_dir: Path) -> None:
        self.fifo_dir, self._n = fifo_dir, 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.forked_bench"],
            env=env,
            cwd=Path(__file__).resolve().parents[1],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.ended = threading.Condition()
        self._codes: dict[int, int] = {}
        self._pids: list[int] = []
        self._ready = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        with self.ended:  # ready once its imports are done
            if not self.ended.wait_for(lambda: self._ready or self.proc.poll() is not None, 300):
                raise TimeoutError("the bench launcher did not start within 300 s")
        if not self._ready:
            raise RuntimeError(f"the bench launcher exited {self.proc.returncode} while importing")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            kind, *numbers = line.split()
            with self.ended:
                if kind == "ready":
                    self._ready = True
                elif kind == "started":
                    self._pids.append(int(numbers[0]))
                else:  # exit PID CODE
                    self._codes[int(numbers[0])] = int(numbers[1])
                self.ended.notify_all()
        with self.ended:
            self.ended.notify_all()

    def exit_code(self, pid: int) -> int | None:
        with self.ended:
            return self._codes.get(pid)

    def bench(self, args: list[str], cwd: Path) -> ForkedRun:
        """Fork a child that runs ``bench ARGS`` in ``cwd``."""
        self._n += 1
        fifo = self.fifo_dir / f"bench-stderr-{self._n}"
        os.mkfifo(fifo)
        # the read end first (non-blocking, so it needs no writer yet); the launcher opens the write end
        # before it forks, so the pipe reaches end-of-file only when the child (and any descendant) ends
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        assert self.proc.stdin is not None
        with self.ended:
            n_before = len(self._pids)
            self.proc.stdin.write(json.dumps({"args": args, "cwd": str(cwd), "stderr": str(fifo)}) + "\n")
            self.proc.stdin.flush()
            if not self.ended.wait_for(
                lambda: len(self._pids) > n_before or self.proc.poll() is not None, 60
            ):
                raise TimeoutError("the bench launcher did not fork within 60 s")
            if len(self._pids) == n_before:
                raise RuntimeError(f"the bench launcher exited {self.proc.returncode}")
            pid = self._pids[n_before]
        os.set_blocking(fd, True)
        return ForkedRun(self, pid, open(fd, encoding="utf-8", errors="replace"))  # noqa: SIM115

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # the launcher ends when its input does (children are killed first)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _child(req: dict, stderr_fd: int) -> None:
    """In the forked child: stdio to the pipe and /dev/null, then ``bench ARGS``; never returns."""
    code = 1
    try:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(stderr_fd, 2)
        os.close(stderr_fd)
        os.chdir(req["cwd"])
        from biasbench.cli import app

        sys.argv = ["bench", *req["args"]]
        try:
            app(args=req["args"], prog_name="bench")
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - the child must never return into the launcher's loop
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def _serve() -> None:
    """The launcher: import, say ``ready``, then fork a child per request line until stdin closes."""
    import importlib

    from biasbench.harness.process_start import preload

    for module in ["biasbench.cli", *preload()]:
        importlib.import_module(module)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    children: set[int] = set()
    buf = ""
    stdin = sys.stdin.fileno()
    open_input = True
    while open_input or children:
        if open_input:
            ready, _, _ = select.select([stdin], [], [], REAP_EVERY)
            if ready:
                chunk = os.read(stdin, 65536).decode()
                if not chunk:
                    open_input = False
                    for pid in children:  # the test is done: nothing may outlive it
                        try:
                            os.kill(pid, 9)
                        except ProcessLookupError:
                            pass
                buf += chunk
                while "\n" in buf:
                    line, buf = buf.split("\n", 1)
                    req = json.loads(line)
                    fd = os.open(req["stderr"], os.O_WRONLY)
                    pid = os.fork()
                    if pid == 0:
                        _child(req, fd)
                    os.close(fd)
                    children.add(pid)
                    out.write(f"started {pid}\n")
                    out.flush()
        else:
            time.sleep(REAP_EVERY)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            children.discard(pid)
            out.write(f"exit {pid} {os.waitstatus_to_exitcode(status)}\n")
            out.flush()


if __name__ == "__main__":
    _serve()
