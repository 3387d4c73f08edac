"""A small classic plugin, built here, that makes the local node answer like a full node.

The integ-test-zip distribution we run has no rest-root module (``GET /`` answers 405, so any
client calling ``info()`` on start fails) and no analysis-common (no ``english`` analyzer, no
stemmers, nothing for the ``.security`` index's ``email`` analyzer). The Java sources in
``es_plugin/src`` fill those gaps with classes already on the server's classpath (server and
Lucene jars in the distribution's ``lib/``), so the build needs only ``javac`` and compiles
against the very jars the node runs: nothing is downloaded.

Build (``javac --release 21`` + jar + zip) is cached under the distribution folder, keyed by the
node's version and a hash of the sources, so re-running set-up skips it. Installing goes through
the distribution's own ``bin/elasticsearch-plugin install --batch`` (it validates the descriptor,
the version pin and jar hell), into a hard-linked staging copy of the distribution; the finished
plugin folder is then renamed into the real ``plugins/``, so a node starting at that moment sees
either no plugin or the whole one, never a half-installed folder.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmops_dagster.config import child_env
from llmops_dagster.files import atomic_write_bytes, file_lock
from llmops_dagster.services.elasticsearch_local import ElasticsearchSetupError
from llmops_dagster.services.java import JavaNotFound, find_java_home

PLUGIN_NAME = "llmops-local-node"
SOURCE_DIR = Path(__file__).with_name("es_plugin")
DESCRIPTOR = "plugin-descriptor.properties"
#: Bumped when the way the zip is assembled changes, so old cached zips are not reused.
BUILD_FORMAT = "1"
#: Elasticsearch 9 runs on Java 21+; compiling for 21 keeps the plugin loadable on any of them.
JAVA_RELEASE = "21"

Log = Callable[[str], None]


class PluginBuildError(ElasticsearchSetupError):
    """The plugin cannot be built or installed; the message names the setting to change."""


def _quiet(_: str) -> None:
    return None


# --------------------------------------------------------------------------------------------
# Identity: which sources, for which node
# --------------------------------------------------------------------------------------------


def source_files(source_dir: Path = SOURCE_DIR) -> list[Path]:
    """The files that make the plugin: Java sources and the descriptor template."""
    files = sorted(p for p in source_dir.rglob("*") if p.suffix in {".java", ".in"})
    if not any(p.suffix == ".java" for p in files):
        raise PluginBuildError(f"No Java sources under {source_dir}: the package is incomplete.")
    return files


def source_hash(source_dir: Path = SOURCE_DIR) -> str:
    """sha256 over relative paths and contents (and the build format): any edit → new build."""
    digest = hashlib.sha256(f"format={BUILD_FORMAT}\n".encode())
    for path in source_files(source_dir):
        digest.update(path.relative_to(source_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def plugin_version(es_version: str, digest: str) -> str:
    """The plugin's own version: the node's version plus the source hash, so an installed copy
    tells which sources and which node it was built for."""
    return f"{es_version}-{digest[:12]}"


def distribution_version(dist_home: Path) -> str:
    """The node's exact version, read from its server jar (``lib/elasticsearch-<v>.jar``)."""
    pattern = re.compile(r"^elasticsearch-(\d+\.\d+\.\d+(?:-[\w.]+)?)\.jar$")
    jars = (dist_home / "lib").glob("*.jar")
    versions = [m.group(1) for jar in jars if (m := pattern.match(jar.name))]
    if len(versions) != 1:
        raise PluginBuildError(
            f"{dist_home} is not an unpacked Elasticsearch distribution (no single "
            "lib/elasticsearch-<version>.jar); re-run `llmops-dagster services fetch`."
        )
    return versions[0]


def default_cache_dir(dist_home: Path) -> Path:
    """Next to the distribution (``LLMOPS_HOME/elasticsearch/dist/plugin-cache``), so a fresh
    LLMOPS_HOME starts clean and the copy relocated for the ES user has its own."""
    return dist_home.parent / "plugin-cache"


def cached_zip_path(cache_dir: Path, es_version: str, digest: str) -> Path:
    return cache_dir / f"{PLUGIN_NAME}-{plugin_version(es_version, digest)}.zip"


def read_descriptor(plugin_dir: Path) -> dict[str, str]:
    """``key=value`` lines of an installed plugin's descriptor; empty if there is none."""
    path = plugin_dir / DESCRIPTOR
    if not path.is_file():
        return {}
    pairs = (
        line.split("=", 1)
        for line in path.read_text(errors="replace").splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


def installed_plugin_dir(dist_home: Path) -> Path:
    return dist_home / "plugins" / PLUGIN_NAME


def is_current(dist_home: Path, es_version: str, digest: str) -> bool:
    """Whether the distribution already has this exact build (same sources, same node version)."""
    installed = read_descriptor(installed_plugin_dir(dist_home))
    return (
        installed.get("version") == plugin_version(es_version, digest)
        and installed.get("elasticsearch.version") == es_version
    )


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PluginBuild:
    zip_path: Path
    version: str
    #: False when the cache answered.
    built: bool
    seconds: float = 0.0


def find_javac(java_home: Path) -> Path:
    javac = java_home / "bin" / "javac"
    if not javac.is_file():
        raise PluginBuildError(
            f"No javac at {javac}: building the local node's plugin needs a JDK (not only a "
            f"runtime) {JAVA_RELEASE}+. Point ES_JAVA_HOME at one, or install one (e.g. "
            f"`apt-get install openjdk-{JAVA_RELEASE}-jdk-headless`)."
        )
    return javac


def _render_descriptor(source_dir: Path, es_version: str, version: str) -> str:
    template = (source_dir / f"{DESCRIPTOR}.in").read_text()
    return (
        template.replace("@PLUGIN_NAME@", PLUGIN_NAME)
        .replace("@PLUGIN_VERSION@", version)
        .replace("@ES_VERSION@", es_version)
    )


def _zip_folder(folder: Path) -> bytes:
    """The files under ``folder`` as a zip (a few hundred KB for the plugin: held in memory)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def build_plugin(
    dist_home: Path,
    cache_dir: Path,
    *,
    java_home: Path | None = None,
    fallback_java_home: Path | None = None,
    source_dir: Path = SOURCE_DIR,
    log: Log = _quiet,
) -> PluginBuild:
    """The plugin zip for this distribution: from the cache when sources and version match,
    else compiled against the distribution's own ``lib/*.jar``.

    ``java_home``: ES_JAVA_HOME (None → the newest JDK 21+ on the machine, JAVA_HOME's
    ``fallback_java_home`` among them)."""
    es_version = distribution_version(dist_home)
    digest = source_hash(source_dir)
    version = plugin_version(es_version, digest)
    target = cached_zip_path(cache_dir, es_version, digest)
    if target.is_file():
        return PluginBuild(target, version, built=False)
    try:
        home, _ = find_java_home(java_home, fallback=fallback_java_home)
    except JavaNotFound as exc:
        raise PluginBuildError(str(exc)) from exc
    javac = find_javac(home)
    started = time.monotonic()
    log(f"Building the {PLUGIN_NAME} plugin for Elasticsearch {es_version} ...")
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = cache_dir / f".build-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    classes, content = staging / "classes", staging / "zip"
    classes.mkdir(parents=True)
    content.mkdir()
    sources = [str(p) for p in source_files(source_dir) if p.suffix == ".java"]
    try:
        proc = subprocess.run(
            [
                str(javac), "--release", JAVA_RELEASE, "-encoding", "UTF-8", "-nowarn",
                "-cp", str(dist_home / "lib" / "*"), "-d", str(classes), *sources,
            ],
            capture_output=True, text=True, check=False, timeout=600,
        )  # fmt: skip
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-20:]
            raise PluginBuildError(
                f"javac could not compile the {PLUGIN_NAME} plugin against {dist_home / 'lib'} "
                f"(exit {proc.returncode}); does LLMOPS_ES_VERSION={es_version} match the "
                "sources?\n" + "\n".join(tail)
            )
        (classes / "META-INF").mkdir(exist_ok=True)
        (classes / "META-INF" / "MANIFEST.MF").write_text("Manifest-Version: 1.0\n\n")
        (content / f"{PLUGIN_NAME}-{version}.jar").write_bytes(_zip_folder(classes))
        (content / DESCRIPTOR).write_text(_render_descriptor(source_dir, es_version, version))
        atomic_write_bytes(target, _zip_folder(content))  # a cached zip is always a whole one
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seconds = time.monotonic() - started
    log(f"Built {target.name} in {seconds:.1f}s")
    return PluginBuild(target, version, built=True, seconds=seconds)


# --------------------------------------------------------------------------------------------
# Install
# --------------------------------------------------------------------------------------------


def _staging_copy(dist_home: Path, staging: Path) -> Path:
    """A copy of the distribution without our plugin, for the plugin CLI to work on, so the
    shared distribution never holds a half-installed folder. Hard links for the program files
    (the CLI only adds files next to them); a real copy of the small config/, which a CLI may
    write to."""
    config = dist_home / "config"

    def link_or_copy(src: str, dst: str) -> None:
        if Path(src).is_relative_to(config):
            shutil.copy2(src, dst)
            return
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    copy = staging / dist_home.name
    shutil.copytree(
        dist_home, copy, symlinks=True, copy_function=link_or_copy,
        ignore=lambda folder, names: (
            [PLUGIN_NAME] if Path(folder) == dist_home / "plugins" else []
        ),
    )  # fmt: skip
    return copy


def install_plugin(
    dist_home: Path,
    zip_path: Path,
    *,
    java_home: Path | None = None,
    fallback_java_home: Path | None = None,
    log: Log = _quiet,
) -> float:
    """Install ``zip_path`` with the distribution's ``elasticsearch-plugin``, replacing an older
    copy of our plugin; returns the seconds it took."""
    try:
        home, _ = find_java_home(java_home, fallback=fallback_java_home)
    except JavaNotFound as exc:
        raise PluginBuildError(str(exc)) from exc
    started = time.monotonic()
    staging = dist_home.parent / f".{dist_home.name}-plugin-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        copy = _staging_copy(dist_home, staging)
        env = child_env(
            drop=("JAVA_TOOL_OPTIONS",),  # its banner on stderr confuses the launcher
            ES_JAVA_HOME=str(home),
            ES_PATH_CONF=str(copy / "config"),
        )
        proc = subprocess.run(
            [str(copy / "bin" / "elasticsearch-plugin"), "install", "--batch",
             zip_path.resolve().as_uri()],
            env=env, cwd=copy, capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
        built = copy / "plugins" / PLUGIN_NAME
        if proc.returncode != 0 or not (built / DESCRIPTOR).is_file():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-20:]
            raise PluginBuildError(
                f"`elasticsearch-plugin install` refused {zip_path.name} (exit "
                f"{proc.returncode}):\n" + "\n".join(tail)
            )
        target = installed_plugin_dir(dist_home)
        if target.exists():
            # Out of plugins/ first: the node refuses to start on stray folders in there.
            target.rename(staging / "previous")
        built.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seconds = time.monotonic() - started
    log(f"Installed {PLUGIN_NAME} into {dist_home} in {seconds:.1f}s")
    return seconds


@dataclass(frozen=True)
class PluginStatus:
    dist_home: Path
    version: str
    #: "current" (nothing to do) or "installed" (built/installed now).
    action: str
    build: PluginBuild | None = None
    install_seconds: float = 0.0


def ensure_plugin(
    dist_home: Path,
    *,
    java_home: Path | None = None,
    fallback_java_home: Path | None = None,
    cache_dir: Path | None = None,
    log: Log = _quiet,
) -> PluginStatus:
    """Make ``dist_home`` carry the current build of the plugin. Cheap when it already does
    (a descriptor read and a hash of a few small files), so every node start can call it; a
    stale copy (other sources, other node version, or none) is rebuilt/reinstalled."""
    es_version = distribution_version(dist_home)
    digest = source_hash()
    version = plugin_version(es_version, digest)
    if is_current(dist_home, es_version, digest):
        return PluginStatus(dist_home, version, "current")
    # One installer per distribution at a time (test sessions start nodes concurrently).
    with file_lock(dist_home.parent / f".{dist_home.name}.plugin.lock"):
        if is_current(dist_home, es_version, digest):  # another process just did it
            return PluginStatus(dist_home, version, "current")
        build = build_plugin(
            dist_home,
            cache_dir or default_cache_dir(dist_home),
            java_home=java_home,
            fallback_java_home=fallback_java_home,
            log=log,
        )
        seconds = install_plugin(
            dist_home,
            build.zip_path,
            java_home=java_home,
            fallback_java_home=fallback_java_home,
            log=log,
        )
    return PluginStatus(dist_home, version, "installed", build=build, install_seconds=seconds)
