"""A real, local Elasticsearch node from the official distribution on Maven Central.

Maven Central publishes ``org.elasticsearch.distribution.integ-test-zip:elasticsearch:<v>:zip``:
the server without a bundled JDK and with a minimal module set (transport, x-pack core and
security). That is enough for BM25 ``text`` fields, ``dense_vector`` + kNN, bulk, aliases and
cluster health, which is what this project needs. We fetch it with ``mvn dependency:copy``
(the ordinary client for that registry), unpack it once into a git-ignored folder, and run one
node per "node directory" (its own config, data, logs and pid file), so tests and the demo never
share state.

Elasticsearch refuses to run as root. When we are root (CI, containers) the node runs as a
dedicated system user, created on first use.

Size (~450 lines, kept whole on purpose): one job, a local node's life — fetch and unpack the
distribution, lay out the node directory, start it as the right user, check health, stop it by
pid — every step working on one :class:`LocalNode` and its folder.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from llmops_dagster.config import child_env
from llmops_dagster.files import publish_dir
from llmops_dagster.services.java import find_java_home

ES_GROUP_ID = "org.elasticsearch.distribution.integ-test-zip"
ES_ARTIFACT_ID = "elasticsearch"
ES_SYSTEM_USER = "llmops-es"

Log = Callable[[str], None]


class ElasticsearchSetupError(RuntimeError):
    """The local node cannot be fetched, started or stopped; the message says what to do."""


def _quiet(_: str) -> None:
    return None


# --------------------------------------------------------------------------------------------
# Fetching the distribution
# --------------------------------------------------------------------------------------------


def distribution_home(dist_dir: Path, version: str) -> Path:
    return dist_dir / f"elasticsearch-{version}"


def fetch_distribution(dist_dir: Path, version: str, *, log: Log = _quiet) -> Path:
    """Download (via Maven) and unpack the distribution once; return its home folder."""
    home = distribution_home(dist_dir, version)
    if (home / "bin" / "elasticsearch").is_file():
        return home
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ElasticsearchSetupError(
            "Maven (`mvn`) is not on PATH; it fetches the Elasticsearch distribution from Maven "
            "Central. Install it (e.g. `apt-get install maven`) or set ELASTICSEARCH_URL to an "
            "existing cluster."
        )
    download_dir = dist_dir / "download"
    download_dir.mkdir(parents=True, exist_ok=True)
    zip_path = download_dir / f"elasticsearch-{version}.zip"
    if not zip_path.is_file():
        artifact = f"{ES_GROUP_ID}:{ES_ARTIFACT_ID}:{version}:zip"
        log(f"Fetching {artifact} from Maven Central ...")
        proc = subprocess.run(
            [
                mvn, "-q", "-B", "dependency:copy",
                f"-Dartifact={artifact}",
                f"-DoutputDirectory={download_dir}",
                "-Dmdep.overWriteReleases=false",
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0 or not zip_path.is_file():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
            raise ElasticsearchSetupError(
                f"`mvn dependency:copy` could not fetch {artifact} (exit {proc.returncode}). "
                "Check LLMOPS_ES_VERSION and that Maven Central is reachable.\n" + "\n".join(tail)
            )
    log(f"Unpacking {zip_path.name} ...")

    def unpack(folder: Path) -> None:
        with zipfile.ZipFile(zip_path) as archive:
            for info in archive.infolist():
                target = archive.extract(info, folder)
                # zipfile drops Unix permissions; the launch scripts and JNA/native libs need +x.
                mode = (info.external_attr >> 16) & 0o777
                if mode:
                    os.chmod(target, mode)
        unpacked = folder / f"elasticsearch-{version}"
        if not (unpacked / "bin" / "elasticsearch").is_file():
            raise ElasticsearchSetupError(
                f"{zip_path} does not contain elasticsearch-{version}/bin"
            )
        for child in unpacked.iterdir():  # the zip's top folder becomes the home itself
            child.rename(folder / child.name)
        unpacked.rmdir()

    # A half-unpacked tree is never mistaken for a good one, and a second process unpacking at
    # the same time keeps the first one's copy.
    publish_dir(home, unpack, complete_marker="bin/elasticsearch")
    return home


# --------------------------------------------------------------------------------------------
# Running a node
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalNode:
    """One node: a distribution plus a node folder holding config, data, logs and pid."""

    dist_home: Path
    node_dir: Path
    port: int
    heap: str = "512m"
    cluster_name: str = "llmops-local"
    #: Extra elasticsearch.yml settings, e.g. to enable security and TLS for a test node.
    extra_settings: tuple[tuple[str, Any], ...] = ()
    #: ES_JAVA_HOME (settings); None → the newest JDK ≥ 21 found on the machine.
    java_home: Path | None = None
    #: JAVA_HOME (settings): one more candidate for that search.
    fallback_java_home: Path | None = None
    #: Appended to ES_JAVA_OPTS (LLMOPS_ES_EXTRA_JAVA_OPTS).
    extra_java_opts: str = ""
    node_name: str = "llmops-node-1"
    #: Transport addresses (host:port) of the cluster's nodes; empty → a single-node cluster.
    seed_hosts: tuple[str, ...] = ()
    #: Node names that vote in the very first master election (only read on first start).
    initial_master_nodes: tuple[str, ...] = ()

    @property
    def scheme(self) -> str:
        tls = dict(self.extra_settings).get("xpack.security.http.ssl.enabled", False)
        return "https" if tls else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def transport_port(self) -> int:
        # Transport next to HTTP so two nodes (demo + tests) never race for 9300.
        return self.port + 100

    @property
    def pid_file(self) -> Path:
        return self.node_dir / "elasticsearch.pid"

    @property
    def log_file(self) -> Path:
        return self.node_dir / "logs" / f"{self.cluster_name}.log"

    @property
    def console_log(self) -> Path:
        return self.node_dir / "logs" / "console.log"


def _discovery_settings(node: LocalNode) -> dict[str, Any]:
    """Single-node discovery (no election, no peers) unless the node belongs to a cluster.

    A cluster node finds its peers through ``discovery.seed_hosts`` (loopback transport ports);
    ``cluster.initial_master_nodes`` lets the first start elect a master among exactly those
    names, so nodes of a fresh cluster never each bootstrap a cluster of their own. It is read
    only while the node's data folder has no cluster yet.
    """
    if not node.seed_hosts:
        return {"discovery.type": "single-node"}
    return {
        "discovery.seed_hosts": list(node.seed_hosts),
        "cluster.initial_master_nodes": list(node.initial_master_nodes or (node.node_name,)),
    }


def _elasticsearch_yml(node: LocalNode) -> str:
    settings = {
        "cluster.name": node.cluster_name,
        "node.name": node.node_name,
        "network.host": "127.0.0.1",
        "http.port": node.port,
        "transport.port": node.transport_port,
        **_discovery_settings(node),
        "path.data": str(node.node_dir / "data"),
        "path.logs": str(node.node_dir / "logs"),
        # Local default only: security off. A secured cluster is used through ELASTICSEARCH_URL.
        "xpack.security.enabled": False,
        # Laptops and CI disks are often >90 % full; watermarks would make indices read-only.
        "cluster.routing.allocation.disk.threshold_enabled": False,
        "action.destructive_requires_name": False,
        **dict(node.extra_settings),
    }
    return "".join(f"{key}: {json.dumps(value)}\n" for key, value in settings.items())


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(ES_SYSTEM_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        raise ElasticsearchSetupError(
            "Elasticsearch refuses to run as root and `useradd` is missing to create the "
            f"'{ES_SYSTEM_USER}' user; run as a normal user or set ELASTICSEARCH_URL."
        )
    subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ES_SYSTEM_USER],
        check=True, capture_output=True,
    )  # fmt: skip
    return pwd.getpwnam(ES_SYSTEM_USER)


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def _prepare_node_dir(node: LocalNode) -> pwd.struct_passwd | None:
    for sub in ("config", "data", "logs", "tmp"):
        (node.node_dir / sub).mkdir(parents=True, exist_ok=True)
    config_dir = node.node_dir / "config"
    # A private copy of the config, so the unpacked distribution stays read-only and shared;
    # made once, so files written into it later (file-realm users, certificates) survive.
    if not (config_dir / "jvm.options").is_file():
        shutil.copytree(node.dist_home / "config", config_dir, dirs_exist_ok=True)
    (config_dir / "elasticsearch.yml").write_text(_elasticsearch_yml(node))
    (config_dir / "jvm.options.d").mkdir(exist_ok=True)
    if os.geteuid() != 0:
        return None
    user = _ensure_system_user()
    _chown_tree(node.node_dir, user.pw_uid, user.pw_gid)
    return user


def _read_pid(node: LocalNode) -> int | None:
    try:
        return int(node.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def cluster_health(url: str, *, timeout: float = 3.0) -> dict | None:
    """``_cluster/health`` without credentials; ``{"status": "secured"}`` when a secured node
    answers 401; None when nothing answers. A liveness probe of our own loopback node, so TLS
    is not verified here (the clients the pipeline uses do verify)."""
    try:
        response = httpx.get(f"{url}/_cluster/health", timeout=timeout, verify=False)
    except httpx.HTTPError:
        return None
    if response.status_code == 401:
        return {"status": "secured"}
    if not response.is_success:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def node_status(node: LocalNode) -> dict:
    pid = _read_pid(node)
    running = pid is not None and _alive(pid)
    health = cluster_health(node.url) if running else None
    return {
        "url": node.url,
        "pid": pid if running else None,
        "running": running,
        "healthy": bool(health and health.get("status") in {"green", "yellow", "secured"}),
        "status": (health or {}).get("status"),
        "node_dir": str(node.node_dir),
    }


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on ``host:port`` (a bind attempt, as the node will make).

    SO_REUSEADDR as Elasticsearch sets it: a closed connection lingering in TIME_WAIT does not
    count as "in use", a listening socket does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def check_ports_free(node: LocalNode) -> None:
    """Fail, naming the port and the setting, when the node's HTTP or transport port is taken:
    otherwise Elasticsearch would exit with a bind error buried in its log."""
    for kind, port in (("HTTP", node.port), ("transport", node.transport_port)):
        if port_in_use(port):
            raise ElasticsearchSetupError(
                f"Port {port} on 127.0.0.1 ({kind} port of Elasticsearch node "
                f"{node.node_name}) is already in use by another process; stop it or choose "
                "another base port with LLMOPS_ES_PORT (HTTP uses the base port and the next "
                "ports for more nodes; transport uses the same ports + 100)."
            )


def _log_tail(node: LocalNode, lines: int = 25) -> str:
    for candidate in (node.console_log, node.log_file):
        if candidate.is_file():
            return "\n".join(candidate.read_text(errors="replace").splitlines()[-lines:])
    return "(no log written)"


def _node_process(
    node: LocalNode, java_home: Path, user: pwd.struct_passwd | None
) -> tuple[dict[str, str], list[str]]:
    """Environment and command prefix for the node and its CLI tools (same user, same conf)."""
    env = child_env(
        drop=("JAVA_TOOL_OPTIONS",),  # its banner on stderr confuses the launcher's checks
        ES_JAVA_HOME=str(java_home),
        ES_PATH_CONF=str(node.node_dir / "config"),
        ES_TMPDIR=str(node.node_dir / "tmp"),
        ES_JAVA_OPTS=f"-Xms{node.heap} -Xmx{node.heap} {node.extra_java_opts}".strip(),
    )
    if user is None:
        return env, []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise ElasticsearchSetupError("Running as root needs `setpriv` (util-linux).")
    env["HOME"] = str(node.node_dir)
    return env, [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups"]


def run_node_tool(node: LocalNode, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one of the distribution's CLI tools (``elasticsearch-users`` ...) against the node's
    config folder, as the node's user: e.g. to add a file-realm user to a secured test node."""
    java_home, _ = find_java_home(node.java_home, fallback=node.fallback_java_home)
    user = _prepare_node_dir(node)
    env, prefix = _node_process(node, java_home, user)
    return subprocess.run(
        [*prefix, str(node.dist_home / "bin" / tool), *args],
        env=env, cwd=node.node_dir, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def start_node(
    node: LocalNode, *, timeout: float = 180.0, log: Log = _quiet, wait: bool = True
) -> dict:
    """Start the node (if not already running) and wait until the cluster is yellow/green.

    ``wait=False`` returns once the process runs: a node of a cluster that is still forming
    answers no health until enough of its peers are up (see ``es_cluster.start_cluster``).
    """
    current = node_status(node)
    if current["running"] and (current["healthy"] or not wait):
        log(f"Elasticsearch already running at {node.url} (pid {current['pid']})")
        return current
    if current["running"]:
        stop_node(node, log=log)
    if cluster_health(node.url) is not None:
        raise ElasticsearchSetupError(
            f"Something else already answers at {node.url}; stop it or choose another port "
            "with LLMOPS_ES_PORT (or use it via ELASTICSEARCH_URL)."
        )
    check_ports_free(node)
    java_home, java_major = find_java_home(node.java_home, fallback=node.fallback_java_home)
    # GET / and English analysis (es_plugin.py); cheap when the distribution has it already.
    from llmops_dagster.services.es_plugin import ensure_plugin

    ensure_plugin(node.dist_home, java_home=java_home, log=log)
    user = _prepare_node_dir(node)
    node.pid_file.unlink(missing_ok=True)
    env, prefix = _node_process(node, java_home, user)
    command = [
        *prefix,
        str(node.dist_home / "bin" / "elasticsearch"),
        "-d",
        "-p",
        str(node.pid_file),
    ]
    log(f"Starting Elasticsearch (Java {java_major} at {java_home}) on {node.url} ...")
    with node.console_log.open("ab") as console:
        proc = subprocess.run(
            command, env=env, stdout=console, stderr=subprocess.STDOUT, cwd=node.node_dir,
            start_new_session=True, check=False, timeout=timeout,
        )  # fmt: skip
    if proc.returncode != 0:
        raise ElasticsearchSetupError(
            f"Elasticsearch failed to start (exit {proc.returncode}); last log lines:\n"
            + _log_tail(node)
        )
    if not wait:
        return node_status(node)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = node_status(node)
        if status["healthy"]:
            log(f"Elasticsearch is up at {node.url} (pid {status['pid']}, {status['status']})")
            return status
        pid = _read_pid(node)
        if pid is not None and not _alive(pid):
            break
        time.sleep(1.0)
    raise ElasticsearchSetupError(
        f"Elasticsearch did not become healthy at {node.url} within {timeout:.0f}s; "
        "last log lines:\n" + _log_tail(node)
    )


def stop_node(
    node: LocalNode, *, timeout: float = 60.0, log: Log = _quiet, kill: bool = False
) -> bool:
    """Stop the node by its pid: SIGTERM, then SIGKILL after ``timeout``. True if one ran.

    ``kill=True`` sends SIGKILL at once: a crash, for failover drills (no graceful shutdown).
    """
    pid = _read_pid(node)
    if pid is None or not _alive(pid):
        node.pid_file.unlink(missing_ok=True)
        return False
    log(f"{'Killing' if kill else 'Stopping'} Elasticsearch (pid {pid}) ...")
    os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.5)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        time.sleep(1.0)
    node.pid_file.unlink(missing_ok=True)
    return True
