"""The local-node plugin's build cache and install check, without compiling: a cache hit must
not need a compiler, anything else (other sources, other node version) must try to build."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llmops_dagster.services import es_plugin
from llmops_dagster.services.elasticsearch_local import ElasticsearchSetupError
from llmops_dagster.services.es_plugin import (
    PLUGIN_NAME,
    PluginBuildError,
    build_plugin,
    cached_zip_path,
    distribution_version,
    is_current,
    plugin_version,
    read_descriptor,
    source_hash,
)

pytestmark = pytest.mark.unit


def _fake_dist(root: Path, version: str) -> Path:
    """Just enough of a distribution to be recognised: the server jar names the version."""
    home = root / f"elasticsearch-{version}"
    (home / "lib").mkdir(parents=True)
    for name in (f"elasticsearch-{version}", f"elasticsearch-cli-{version}", "lucene-core-10.5.0"):
        (home / "lib" / f"{name}.jar").write_bytes(b"")
    (home / "plugins").mkdir()
    return home


def _jdk_without_javac(root: Path) -> Path:
    """A Java 25 runtime (what find_java_home accepts) that has no compiler."""
    home = root / "jre-25"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "java").write_text("#!/bin/sh\nexit 0\n")
    (home / "bin" / "java").chmod(0o755)
    (home / "release").write_text('JAVA_VERSION="25.0.1"\n')
    return home


def _sources_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "sources"
    shutil.copytree(es_plugin.SOURCE_DIR, copy)
    return copy


def test_source_hash_follows_sources_only(tmp_path: Path) -> None:
    sources = _sources_copy(tmp_path)
    digest = source_hash(sources)
    assert digest == source_hash(es_plugin.SOURCE_DIR)
    assert len(digest) == 64
    (sources / "NOTES.txt").write_text("not a source")
    assert source_hash(sources) == digest
    java = next(sources.rglob("RootInfoAction.java"))
    java.write_text(java.read_text() + "\n// edited\n")
    assert source_hash(sources) != digest


def test_source_folder_without_java_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "plugin-descriptor.properties.in").write_text("name=x\n")
    with pytest.raises(PluginBuildError, match="No Java sources"):
        source_hash(tmp_path)


def test_distribution_version_comes_from_the_server_jar(tmp_path: Path) -> None:
    assert distribution_version(_fake_dist(tmp_path, "9.5.0")) == "9.5.0"
    assert distribution_version(_fake_dist(tmp_path / "rc", "9.6.0-rc1")) == "9.6.0-rc1"
    empty = tmp_path / "empty"
    (empty / "lib").mkdir(parents=True)
    with pytest.raises(PluginBuildError, match="services fetch"):
        distribution_version(empty)


def test_cache_hit_needs_no_compiler(tmp_path: Path) -> None:
    dist = _fake_dist(tmp_path, "9.5.0")
    cache = tmp_path / "cache"
    cached = cached_zip_path(cache, "9.5.0", source_hash())
    cached.parent.mkdir()
    cached.write_bytes(b"PK-cached")
    build = build_plugin(dist, cache, java_home=_jdk_without_javac(tmp_path))
    assert build.zip_path == cached
    assert build.built is False
    assert build.version == f"9.5.0-{source_hash()[:12]}"
    assert cached.read_bytes() == b"PK-cached"


def test_other_node_version_is_a_cache_miss(tmp_path: Path) -> None:
    # A zip built for 9.4.0 must not be installed into a 9.5.0 node: it rebuilds, which here
    # stops at the missing compiler (proof that it did not take the cached zip).
    dist = _fake_dist(tmp_path, "9.5.0")
    cache = tmp_path / "cache"
    old = cached_zip_path(cache, "9.4.0", source_hash())
    old.parent.mkdir()
    old.write_bytes(b"PK-old")
    assert old != cached_zip_path(cache, "9.5.0", source_hash())
    with pytest.raises(PluginBuildError, match="No javac"):
        build_plugin(dist, cache, java_home=_jdk_without_javac(tmp_path))
    assert sorted(p.name for p in cache.iterdir()) == [old.name]  # no partial build left


def test_edited_sources_are_a_cache_miss(tmp_path: Path) -> None:
    dist = _fake_dist(tmp_path, "9.5.0")
    sources = _sources_copy(tmp_path)
    cache = tmp_path / "cache"
    cached = cached_zip_path(cache, "9.5.0", source_hash(sources))
    cached.parent.mkdir()
    cached.write_bytes(b"PK")
    jdk = _jdk_without_javac(tmp_path)
    assert build_plugin(dist, cache, java_home=jdk, source_dir=sources).built is False
    java = next(sources.rglob("LocalNodePlugin.java"))
    java.write_text(java.read_text() + "\n// edited\n")
    with pytest.raises(PluginBuildError, match="No javac"):
        build_plugin(dist, cache, java_home=jdk, source_dir=sources)


def test_missing_javac_names_the_setting(tmp_path: Path) -> None:
    dist = _fake_dist(tmp_path, "9.5.0")
    jdk = _jdk_without_javac(tmp_path)
    with pytest.raises(PluginBuildError) as excinfo:
        build_plugin(dist, tmp_path / "cache", java_home=jdk)
    message = str(excinfo.value)
    assert f"No javac at {jdk / 'bin' / 'javac'}" in message
    assert "ES_JAVA_HOME" in message
    # Callers that handle the node's set-up errors (CLI, test fixtures) handle this one too.
    assert isinstance(excinfo.value, ElasticsearchSetupError)


def test_installed_copy_is_current_only_for_same_sources_and_version(tmp_path: Path) -> None:
    dist = _fake_dist(tmp_path, "9.5.0")
    digest = source_hash()
    assert is_current(dist, "9.5.0", digest) is False  # none installed

    installed = dist / "plugins" / PLUGIN_NAME
    installed.mkdir()
    descriptor = installed / "plugin-descriptor.properties"

    def write(version: str, es_version: str) -> None:
        descriptor.write_text(
            f"# comment=ignored\nname={PLUGIN_NAME}\nversion={version}\n"
            f"elasticsearch.version={es_version}\n"
        )

    write(plugin_version("9.5.0", digest), "9.5.0")
    assert read_descriptor(installed)["version"] == f"9.5.0-{digest[:12]}"
    assert is_current(dist, "9.5.0", digest) is True
    write(plugin_version("9.4.0", digest), "9.4.0")  # built for another node
    assert is_current(dist, "9.5.0", digest) is False
    write(plugin_version("9.5.0", "0" * 64), "9.5.0")  # older sources
    assert is_current(dist, "9.5.0", digest) is False
