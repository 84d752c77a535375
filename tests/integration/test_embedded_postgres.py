"""The embedded PostgreSQL leaves nothing running, also after a stop and restart (what the
PostgreSQL outage tests do to the suite's own server).

This path alone does not reproduce the leak the suite had (pgserver's cleanup stops the
server here); the leak showed when the PostgreSQL-outage test ran in a pytest session, and
was checked that way. This keeps stop() after a restart honest: nothing left, no error."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pipeline.embedded import EmbeddedPostgres


def postmasters(data_dir: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if f"-D {data_dir}" in line]


def test_a_restarted_server_is_stopped_too(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    pg = EmbeddedPostgres(data_dir, database="postgres")
    pg.start()
    try:
        pg.stop_server()
        pg.start_server()
        assert pg.psql("SELECT 1").strip() == "1"
    finally:
        pg.stop()
    assert not (data_dir / "postmaster.pid").exists()
    assert postmasters(data_dir) == []
