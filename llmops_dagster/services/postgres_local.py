"""A throw-away PostgreSQL cluster from Debian's ``postgresql`` binaries, for tests and trials.

``initdb`` + ``pg_ctl`` in a folder of our own, listening on one loopback port with ``trust``
authentication: nothing of the system's own cluster (``/etc/postgresql``, port 5432) is used or
touched. PostgreSQL refuses to run as root, so as root the cluster runs as the unprivileged
``postgres`` user the package creates (or ``llmops-pg``, created here when that is missing).
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from llmops_dagster.config import child_env

PG_SUPERUSER = "llmops"
_FALLBACK_SYSTEM_USER = "llmops-pg"


class PostgresSetupError(RuntimeError):
    """PostgreSQL is missing, or the cluster could not be created or started."""


def find_pg_bin(override: Path | None = None) -> Path:
    """The folder with ``initdb``/``pg_ctl``: Debian keeps them in /usr/lib/postgresql/<v>/bin
    (not on PATH); the newest version wins. ``override`` (the LLMOPS_PG_BIN setting) first."""
    candidates = [Path(override)] if override else []
    candidates += sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise PostgresSetupError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's `postgresql` "
        "package (scripts/setup.sh does as root) or set LLMOPS_PG_BIN."
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _system_user() -> pwd.struct_passwd | None:
    """None when we are not root (the cluster runs as us); else an unprivileged user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", _FALLBACK_SYSTEM_USER):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
         _FALLBACK_SYSTEM_USER],
        check=True, capture_output=True,
    )  # fmt: skip
    return pwd.getpwnam(_FALLBACK_SYSTEM_USER)


@dataclass(frozen=True)
class LocalPostgres:
    """One cluster: its data folder and loopback port; databases are created on demand."""

    data_dir: Path
    port: int
    bin_dir: Path
    user: str = PG_SUPERUSER

    def url(self, database: str = "postgres", *, driver: str = "postgresql") -> str:
        """A SQLAlchemy/libpq URL (``driver="postgresql+psycopg2"`` for SQLAlchemy engines)."""
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={database}"

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"


def _world_traversable(path: Path) -> bool:
    return all(
        not folder.exists() or folder.stat().st_mode & stat.S_IXOTH
        for folder in [path, *path.parents]
    )


def _relocated(data_dir: Path) -> Path:
    """As root the cluster runs as another user, who cannot enter a private (0700) folder such
    as pytest's tmp_path; such clusters live under /var/tmp instead (deterministic per path)."""
    if _world_traversable(data_dir.parent):
        return data_dir
    key = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    root = Path("/var/tmp/llmops-postgres")
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    return root / key / data_dir.name


def _run_as(
    user: pwd.struct_passwd | None, args: list[str], **kwargs
) -> subprocess.CompletedProcess:
    prefix: list[str] = []
    if user is not None:
        prefix = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups"]
    env = child_env(LC_ALL="C.UTF-8", LANG="C.UTF-8")
    if user is not None:
        env["HOME"] = "/tmp"
    return subprocess.run(
        [*prefix, *args], capture_output=True, text=True, env=env, check=False, **kwargs
    )


def start_postgres(
    data_dir: Path,
    *,
    port: int | None = None,
    databases: tuple[str, ...] = (),
    timeout: float = 60.0,
    bin_dir: Path | None = None,
) -> LocalPostgres:
    """Create (once) and start a cluster in ``data_dir``; create ``databases`` if missing.
    ``bin_dir``: the LLMOPS_PG_BIN setting (else Debian's newest server binaries)."""
    bin_dir = find_pg_bin(bin_dir)
    user = _system_user()
    data_dir = data_dir.resolve()
    if user is not None:
        data_dir = _relocated(data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    pg = LocalPostgres(data_dir=data_dir, port=port or free_port(), bin_dir=bin_dir)
    if not (data_dir / "PG_VERSION").is_file():
        data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            data_dir.parent.chmod(0o755)
            os.chown(data_dir, user.pw_uid, user.pw_gid)
        done = _run_as(user, [
            str(bin_dir / "initdb"), "-D", str(data_dir), "-U", pg.user, "--auth=trust",
            "--encoding=UTF8", "--no-instructions",
        ], timeout=timeout)  # fmt: skip
        if done.returncode != 0:
            raise PostgresSetupError(f"initdb failed in {data_dir}:\n{done.stderr[-2000:]}")
    log_file = pg.log_file
    log_file.touch()
    if user is not None:
        os.chown(log_file, user.pw_uid, user.pw_gid)
    # Sockets in the data folder (not /var/run/postgresql, which may be missing or not ours);
    # clients connect over TCP on loopback. fsync off: a test cluster, speed over durability.
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={pg.port} -c unix_socket_directories={data_dir} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    done = _run_as(user, [
        str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-l", str(log_file), "-o", options,
        "-w", "-t", str(int(timeout)), "start",
    ], timeout=timeout + 10)  # fmt: skip
    if done.returncode != 0:
        tail = log_file.read_text(errors="replace")[-2000:] if log_file.is_file() else ""
        raise PostgresSetupError(f"pg_ctl start failed on port {pg.port}:\n{done.stderr}\n{tail}")
    for name in databases:
        create_database(pg, name)
    return pg


def wait_ready(pg: LocalPostgres, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done = _run_as(
            None, [str(pg.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(pg.port)]
        )
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise PostgresSetupError(f"PostgreSQL on port {pg.port} is not ready: {done.stdout}")
        time.sleep(0.2)


def create_database(pg: LocalPostgres, name: str) -> None:
    """Create ``name`` unless it exists (idempotent)."""
    import psycopg2

    wait_ready(pg)
    con = psycopg2.connect(pg.dsn("postgres"))
    try:
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        con.close()


def stop_postgres(pg: LocalPostgres, *, timeout: float = 60.0) -> None:
    """Fast shutdown (rolls back open transactions, disconnects clients)."""
    _run_as(_system_user(), [
        str(pg.bin_dir / "pg_ctl"), "-D", str(pg.data_dir), "-m", "fast", "-w",
        "-t", str(int(timeout)), "stop",
    ], timeout=timeout + 10)  # fmt: skip
