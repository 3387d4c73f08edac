"""Finding a JDK that can run Elasticsearch 9 (Java 21 or newer)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

MIN_JAVA_MAJOR = 21
JVM_ROOTS = (Path("/usr/lib/jvm"), Path("/usr/java"), Path("/opt/java"))


class JavaNotFound(RuntimeError):
    pass


def java_major(java_home: Path) -> int | None:
    """The major version of the JDK at ``java_home``, or None if it is not a usable JDK."""
    java = java_home / "bin" / "java"
    if not java.is_file():
        return None
    release = java_home / "release"
    if release.is_file():
        match = re.search(r'^JAVA_VERSION="(\d+)', release.read_text(errors="replace"), re.M)
        if match:
            return int(match.group(1))
    try:
        out = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stderr
    except OSError:
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        return None
    major = int(match.group(1))
    # Java 8 and older report "1.8"; nothing that old runs Elasticsearch anyway.
    return int(match.group(2) or 0) if major == 1 else major


def find_java_home(
    preferred: Path | None = None, *, fallback: Path | None = None
) -> tuple[Path, int]:
    """``preferred`` (the ES_JAVA_HOME setting) if given, else the newest JDK >= 21 among
    ``fallback`` (the JAVA_HOME setting) and the usual JVM folders."""
    explicit = preferred
    if explicit is not None:
        major = java_major(explicit)
        if major is None:
            raise JavaNotFound(f"ES_JAVA_HOME={explicit} is not a JDK (no bin/java there).")
        if major < MIN_JAVA_MAJOR:
            raise JavaNotFound(
                f"ES_JAVA_HOME={explicit} is Java {major}; Elasticsearch 9 needs Java "
                f"{MIN_JAVA_MAJOR}+."
            )
        return explicit, major

    candidates: list[Path] = []
    if fallback is not None:
        candidates.append(fallback)
    for root in JVM_ROOTS:
        if root.is_dir():
            candidates.extend(
                sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
            )
    found: list[tuple[int, Path]] = []
    seen: set[Path] = set()
    for home in candidates:
        resolved = home.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        major = java_major(home)
        if major is not None and major >= MIN_JAVA_MAJOR:
            found.append((major, home))
    if not found:
        looked = ", ".join(str(r) for r in JVM_ROOTS)
        raise JavaNotFound(
            f"No Java {MIN_JAVA_MAJOR}+ found (looked at JAVA_HOME and {looked}). Install a JDK "
            f"{MIN_JAVA_MAJOR}+ (e.g. `apt-get install openjdk-21-jre-headless`) or set "
            "ES_JAVA_HOME to one."
        )
    major, home = max(found, key=lambda item: item[0])
    return home, major
