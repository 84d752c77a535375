"""A real streaming replica of an embedded PostgreSQL, from the same pgserver wheel.

``pg_basebackup -R -X stream`` copies the primary over its unix socket and writes
``standby.signal`` and ``primary_conninfo``; ``pg_ctl`` starts the copy as a hot standby on
a socket directory of its own. Nothing needs changing on the primary: pgserver's initdb
leaves PostgreSQL 16's defaults (``wal_level=replica``, ``max_wal_senders=10``) and a
``local replication all trust`` line in ``pg_hba.conf``. When the tests run as root,
pgserver runs PostgreSQL as its own system user, so both tools run as that user too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

import asyncpg

from pipeline.embedded import EmbeddedPostgres, free_port


class Standby:
    """A hot standby of ``primary`` under ``base_dir`` (data and socket directories)."""

    def __init__(self, primary: EmbeddedPostgres, base_dir: Path) -> None:
        self.primary = primary
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.socket_dir = base_dir / "sock"
        self.port = free_port()  # names the socket file only: no TCP listener

    @property
    def _user(self) -> str | None:
        return self.primary.system_user

    def url_for(self, database: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@/{database}?host={self.socket_dir}&port={self.port}"

    def create(self) -> None:
        """Take the base backup and start the standby; returns once it streams."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o755)  # the server's system user must traverse it
        for path in (self.data_dir, self.socket_dir):
            path.mkdir(mode=0o700)
            if self._user is not None:
                entry = pwd.getpwnam(self._user)
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run(
            "pg_basebackup", "-D", str(self.data_dir), "-d", self.primary.url_for("postgres"),
            "-R", "-X", "stream", "-c", "fast", "--no-sync",
        )  # fmt: skip
        self.start_server()

    def start_server(self) -> None:
        """Start (again) and wait until its WAL receiver streams from the primary."""
        options = f'-h "" -k {self.socket_dir} -p {self.port} -c fsync=off'
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-w", "-t", "30", "-o", options,
            "-l", str(self.data_dir / "standby.log"), "start",
        )  # fmt: skip
        asyncio.run(self._wait_streaming())

    def stop_server(self) -> None:
        """Stop it (fast shutdown); its data is kept for :meth:`start_server`."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-t", "30", "-m", "fast", "stop")

    def destroy(self) -> None:
        """Stop it however it can be stopped and delete its files. Never raises."""
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists():
            try:
                self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-t", "10", "-m",
                          "immediate", "stop")  # fmt: skip
            except Exception:  # last resort: SIGQUIT is PostgreSQL's immediate shutdown
                with contextlib.suppress(Exception):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        log = self.data_dir / "standby.log"
        return "\n".join(log.read_text().splitlines()[-lines:]) if log.exists() else ""

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            [str(self.primary.bin_dir / tool), *args],
            user=self._user, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({result.returncode}): {result.stderr.strip()}\n{self.log_tail()}"
            )

    async def _wait_streaming(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                conn = await asyncpg.connect(self.url_for("postgres"), timeout=2)
                try:
                    if await conn.fetchval(
                        "SELECT EXISTS (SELECT 1 FROM pg_stat_wal_receiver "
                        "WHERE status = 'streaming')"
                    ):
                        return
                finally:
                    await conn.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby does not stream:\n{self.log_tail()}")
            await asyncio.sleep(0.05)
