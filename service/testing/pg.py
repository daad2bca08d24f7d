"""A private PostgreSQL server for fault tests: its own data folder and loopback port; stopping it harms nothing else.

    with PrivatePostgres() as pg:        # initdb, then start; stop and delete everything on exit
        engine = sa.create_engine(pg.url)
        pg.stop(mode="immediate")        # the database goes away (connections fail at once)
        pg.start()                       # ...and comes back with its data

The server runs as the ``postgres`` user (initdb refuses root): the data folder lives in a temporary folder owned by
``postgres``, authentication is ``trust`` on 127.0.0.1, and the Unix socket sits in that folder too. ``fsync`` is off
(fast on a shared disk) but commits still wait for their WAL write, so a committed row survives ``stop("immediate")``
(a killed server; the OS keeps the written pages) as it would a crash of a production server.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Literal

from service.testing.server import free_port

PG_USER = "postgres"


def find_pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb and pg_ctl, or None."""
    found = [
        Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/pg_ctl") if Path(p).with_name("initdb").exists()
    ]
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0) if found else None


def unavailable_reason() -> str | None:
    """Why a private PostgreSQL cannot run here (None if it can)."""
    if find_pg_bin() is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin"
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        return f"no {PG_USER!r} user to run the server as"
    if os.geteuid() != 0 and pwd.getpwuid(os.geteuid()).pw_name != PG_USER:
        return f"running as neither root nor {PG_USER!r}: cannot run the server as {PG_USER!r}"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "runuser is missing (needed to run the server as postgres)"
    return None


class PrivatePostgres:
    """One PostgreSQL server on 127.0.0.1:``port`` with its data under a temporary folder; ``close()`` removes it all.

    ``url`` (``postgresql+psycopg://postgres@127.0.0.1:PORT/postgres``) stays the same across stop/start, and so does
    the data. Every method waits for the server's state to be reached (or raises ``TimeoutError``).
    """

    def __init__(self, port: int | None = None, timeout_s: float = 30.0) -> None:
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(f"private PostgreSQL unavailable: {reason}")
        self.bin = find_pg_bin()
        self.port = port or free_port()
        self.timeout_s = timeout_s
        self.root = Path(tempfile.mkdtemp(prefix="tvlars-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._initialized = False
        self._uid, self._gid = pwd.getpwnam(PG_USER).pw_uid, pwd.getpwnam(PG_USER).pw_gid
        os.chown(self.root, self._uid, self._gid)
        os.chmod(self.root, 0o700)
        atexit.register(self.close)  # a session that ends without reaching close() still stops its server

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/postgres"

    # -- lifecycle --------------------------------------------------------------------------------------------------

    def init(self) -> None:
        """initdb (trust authentication), listening on 127.0.0.1:port only, its socket in our folder."""
        self._run("initdb", "-D", str(self.data), "-U", PG_USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.root}'\n"
                "fsync = off\nmax_connections = 200\n"
            )
        self._initialized = True

    def start(self) -> None:
        """Start the server (initdb first if needed) and wait until it accepts connections."""
        if not self._initialized:
            self.init()
        if not self.is_running():
            # -w: pg_ctl itself waits until the server answers; -t bounds it
            self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(int(self.timeout_s)), "start"
            )
        self._wait(accepting=True)

    def stop(self, mode: Literal["fast", "immediate", "smart"] = "fast") -> None:
        """Stop: ``fast`` ends sessions cleanly, ``immediate`` aborts (as a crash would; recovery on the next start)."""
        if self._initialized and self.is_running():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(int(self.timeout_s)), "stop")
        self._wait(accepting=False)

    def restart(self, mode: Literal["fast", "immediate", "smart"] = "fast") -> None:
        self.stop(mode)
        self.start()

    def close(self) -> None:
        """Stop the server (immediate) if it runs and delete its folder; safe to call twice."""
        try:
            if self._initialized and self.is_running():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop", check=False)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state --------------------------------------------------------------------------------------------------

    def is_running(self) -> bool:
        """pg_ctl status: a postmaster runs on our data folder."""
        if not (self.data / "postmaster.pid").exists():
            return False
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def accepts_connections(self) -> bool:
        """Something accepts TCP connections on our port (PostgreSQL answers once it is ready)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pass
        except OSError:
            return False
        return self._run("pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-t", "2", check=False).returncode == 0

    def _wait(self, accepting: bool) -> None:
        deadline = time.monotonic() + self.timeout_s
        while self.accepts_connections() != accepting:
            if time.monotonic() > deadline:
                state = "accept connections" if accepting else "stop accepting connections"
                raise TimeoutError(
                    f"PostgreSQL on port {self.port} did not {state} in {self.timeout_s} s\n{self._tail()}"
                )
            time.sleep(0.1)

    def _tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no server log)"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", PG_USER, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s + 30, cwd=self.root)
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}\n{self._tail()}"
            )
        return proc
