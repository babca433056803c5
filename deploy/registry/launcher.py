#!/usr/bin/env python3
"""Run Apicurio Registry 3 (a real Confluent-compatible schema registry) without Docker.

The registry is Apicurio's runnable distribution from Maven Central, the ``all`` tar.gz of
``io.apicurio:apicurio-registry-app``: Maven copies it once (``mvn dependency:copy``, no pom
needed) and it is unpacked into a cache (``~/.cache/her2-apicurio/<version>/app``, or
``$HER2_APICURIO_DIR``). It is a Quarkus application (``java -jar quarkus-run.jar``) with
in-memory storage, serving the Confluent-compatible API under ``/apis/ccompat/v7``.

Apicurio 3 needs Java 21+. Java 17 (what the Kafka broker needs) is often the default ``java``,
so the newest Java 21+ is searched for: ``$HER2_REGISTRY_JAVA_HOME``, ``$JAVA_HOME``, ``java`` on
PATH, ``update-alternatives --list java`` and ``/usr/lib/jvm/*`` (:func:`find_java`).

As a module (the integration tests use it this way)::

    with LocalApicurio(tmp_path) as registry:
        url = registry.ccompat_url     # http://127.0.0.1:PORT/apis/ccompat/v7

As a command line (foreground, Ctrl-C stops it)::

    python deploy/registry/launcher.py run --dir /tmp/apicurio [--port 8080]

The process handling (free ports, the watchdog that stops the JVM if this Python process dies,
log tails) is deploy/kafka/launcher.py's, imported from there.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import glob
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Self

DEFAULT_VERSION = "3.3.3"
MIN_JAVA_MAJOR = 21
HOST = "127.0.0.1"
DIR_ENV = "HER2_APICURIO_DIR"
JAVA_HOME_ENV = "HER2_REGISTRY_JAVA_HOME"
CCOMPAT = "/apis/ccompat/v7"
ARTIFACT = "io.apicurio:apicurio-registry-app:{version}:tar.gz:all"
JVM_OPTIONS = ("-Xms128m", "-Xmx512m", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true")
MAVEN_TIMEOUT_S = 900.0
STOP_TIMEOUT_S = 20.0

HERE = Path(__file__).resolve().parent


class RegistryLauncherError(RuntimeError):
    """No Java 21+, the distribution cannot be resolved, or the registry did not come up."""


class NoJava21(RegistryLauncherError):
    """No Java 21 or newer was found (the only reason the tests skip rather than fail)."""


def _kafka_launcher() -> ModuleType:
    """deploy/kafka/launcher.py, for its process helpers."""
    name = "her2_kafka_launcher"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE.parent / "kafka" / "launcher.py")
    if spec is None or spec.loader is None:
        raise ImportError("cannot load deploy/kafka/launcher.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def log(message: str) -> None:
    """Print a progress message on stderr."""
    print(f"[her2-apicurio] {message}", file=sys.stderr, flush=True)


def java_major(java: str) -> int | None:
    """The major version of a ``java`` executable, or None if it cannot be run."""
    try:
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_392" style
        major = int(match.group(2))
    return major


def java_candidates() -> list[str]:
    """Every ``java`` executable this machine offers, in the order they are preferred."""
    found: list[str] = []
    for variable in (JAVA_HOME_ENV, "JAVA_HOME"):
        home = os.environ.get(variable)
        if home:
            found.append(str(Path(home, "bin", "java")))
    on_path = shutil.which("java")
    if on_path:
        found.append(on_path)
    alternatives = shutil.which("update-alternatives")
    if alternatives:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            listed = subprocess.run(  # noqa: S603 - fixed argv, no shell
                [alternatives, "--list", "java"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            found.extend(line.strip() for line in listed.stdout.splitlines() if line.strip())
    found.extend(sorted(glob.glob("/usr/lib/jvm/*/bin/java")))
    unique: dict[str, None] = {}
    for path in found:
        if Path(path).is_file():
            unique.setdefault(os.path.realpath(path))
    return list(unique)


@functools.cache
def find_java(min_major: int = MIN_JAVA_MAJOR) -> str:
    """The newest ``java`` of at least ``min_major`` among :func:`java_candidates`."""
    versions = {java: java_major(java) for java in java_candidates()}
    usable = {java: major for java, major in versions.items() if major and major >= min_major}
    if not usable:
        seen = ", ".join(f"{j} ({m})" for j, m in versions.items()) or "none"
        raise NoJava21(
            f"Apicurio Registry 3 needs Java {min_major}+; found: {seen}. Install a JDK "
            f"{min_major}+ or set {JAVA_HOME_ENV}"
        )
    return max(usable, key=lambda java: usable[java])


def default_app_dir(version: str) -> Path:
    """Folder of the unpacked distribution: ``$HER2_APICURIO_DIR`` or the per-version cache."""
    override = os.environ.get(DIR_ENV)
    if override:
        return Path(override).expanduser().resolve()
    return Path.home() / ".cache" / "her2-apicurio" / version / "app"


def resolve_distribution(version: str = DEFAULT_VERSION, app_dir: Path | None = None) -> Path:
    """Make sure ``app_dir`` holds the unpacked registry (``quarkus-run.jar``); return it.

    Maven copies the tar.gz only when the folder is empty; it is unpacked into a staging folder
    that is renamed into place, so parallel callers never see half a distribution.
    """
    target = app_dir or default_app_dir(version)
    if (target / "quarkus-run.jar").is_file():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RegistryLauncherError(
            f"Maven ('mvn') is needed once to fetch {ARTIFACT.format(version=version)} into "
            f"{target}: install Maven 3, or unpack that tar.gz there yourself"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    log(f"resolving Apicurio Registry {version} with Maven (first run only)...")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".resolving-", dir=target.parent) as staging_root:
        staging = Path(staging_root)
        command = [
            mvn,
            "-q",
            "-B",
            "dependency:copy",
            f"-Dartifact={ARTIFACT.format(version=version)}",
            f"-DoutputDirectory={staging / 'download'}",
        ]
        try:
            result = subprocess.run(  # noqa: S603 - fixed argv, no shell
                command, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise RegistryLauncherError(
                f"Maven did not finish within {MAVEN_TIMEOUT_S:.0f}s"
            ) from exc
        archives = list((staging / "download").glob("*.tar.gz"))
        if result.returncode != 0 or len(archives) != 1:
            output = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
            raise RegistryLauncherError(
                f"Maven could not resolve {ARTIFACT.format(version=version)} "
                f"(exit code {result.returncode}):\n{output}"
            )
        unpacked = staging / "app"
        with tarfile.open(archives[0]) as archive:
            archive.extractall(unpacked, filter="data")
        runner = next(unpacked.rglob("quarkus-run.jar"), None)
        if runner is None:
            raise RegistryLauncherError(f"{archives[0].name} holds no quarkus-run.jar")
        with contextlib.suppress(OSError):
            target.rmdir()
        try:
            runner.parent.rename(target)
        except OSError:
            if not (target / "quarkus-run.jar").is_file():  # not another process finishing first
                raise
    log(f"resolved and unpacked in {time.monotonic() - started:.1f}s")
    return target


class LocalApicurio:
    """Apicurio Registry in a child JVM on free loopback ports, in-memory storage.

    ``work_dir`` holds ``apicurio.out`` (the JVM's output). The registry is stopped at
    interpreter exit, and a watchdog stops it if this Python process is killed outright.
    """

    def __init__(
        self,
        work_dir: Path | str,
        version: str = DEFAULT_VERSION,
        *,
        port: int | None = None,
        app_dir: Path | None = None,
    ) -> None:
        """Describe a registry; nothing starts before :meth:`start`."""
        self.work_dir = Path(work_dir).resolve()
        self.version = version
        self.app_dir = app_dir
        self.port = port
        self.management_port: int | None = None
        self.java: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._watchdog_pipe: int | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (known once :meth:`start` picked the port)."""
        if self.port is None:
            raise RegistryLauncherError("the registry has no port yet: call start() first")
        return f"http://{HOST}:{self.port}"

    @property
    def ccompat_url(self) -> str:
        """The Confluent-compatible API: what ``HER2_SCHEMA_REGISTRY_URL`` points at."""
        return self.url + CCOMPAT

    @property
    def output_log(self) -> Path:
        """The JVM's stdout and stderr."""
        return self.work_dir / "apicurio.out"

    def is_running(self) -> bool:
        """Whether the JVM started by this object is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 120.0) -> Self:
        """Start the registry and return once its Confluent-compatible API answers.

        Raises :class:`NoJava21` when no Java 21+ exists, :class:`RegistryLauncherError` (with
        the tail of its output) for anything else.
        """
        if self.is_running():
            raise RegistryLauncherError("the registry is already running")
        self.java = find_java()
        app = resolve_distribution(self.version, self.app_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        kafka = _kafka_launcher()
        if self.management_port is None:  # kept across restarts, like the Kafka launcher's
            port, self.management_port = kafka.free_ports(2)
            self.port = self.port or port
        command = [
            self.java,
            *JVM_OPTIONS,
            f"-Dquarkus.http.host={HOST}",
            f"-Dquarkus.http.port={self.port}",
            f"-Dquarkus.management.host={HOST}",
            f"-Dquarkus.management.port={self.management_port}",
            "-jar",
            str(app / "quarkus-run.jar"),
        ]
        self._process, self._watchdog, self._watchdog_pipe = kafka.spawn_watched(
            command, self.output_log, self.work_dir
        )
        atexit.register(self.stop)
        try:
            self._wait_until_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the registry: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        atexit.unregister(self.stop)
        watched = (self._process, self._watchdog, self._watchdog_pipe)
        self._process = self._watchdog = self._watchdog_pipe = None
        _kafka_launcher().terminate_watched(*watched, signal.SIGTERM, timeout)

    def __enter__(self) -> Self:
        """Start the registry (if not running) for a ``with`` block."""
        return self if self.is_running() else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the registry at the end of the ``with`` block."""
        self.stop()

    def _wait_until_ready(self, timeout: float) -> None:
        """Poll ``GET /apis/ccompat/v7/config`` until it answers 200."""
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = self._process.returncode if self._process else None
                raise self._failure(f"the registry exited during start-up (exit code {code})")
            try:
                with urllib.request.urlopen(  # noqa: S310 - our own loopback URL
                    self.ccompat_url + "/config", timeout=2
                ) as answer:
                    if answer.status == 200:
                        return
            except (OSError, urllib.error.URLError) as exc:
                last_error = type(exc).__name__
            time.sleep(0.2)
        raise self._failure(f"the registry did not answer within {timeout:.0f}s ({last_error})")

    def _failure(self, reason: str) -> RegistryLauncherError:
        """An error with the tail of the registry's output."""
        tail = _kafka_launcher().tail(self.output_log)
        return RegistryLauncherError(
            f"Apicurio Registry {self.version} in {self.work_dir}: {reason}\n"
            f"--- tail of {self.output_log} ---\n{tail}"
        )


def main(argv: list[str] | None = None) -> int:
    """``run --dir DIR [--port N]``: run the registry in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run in the foreground (Ctrl-C stops it)")
    run.add_argument("--dir", type=Path, required=True)
    run.add_argument("--port", type=int)
    run.add_argument("--version", default=DEFAULT_VERSION)
    args = parser.parse_args(argv)
    registry = LocalApicurio(args.dir, args.version, port=args.port)
    try:
        registry.start()
    except RegistryLauncherError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(registry.ccompat_url, flush=True)
    try:
        while registry.is_running():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        registry.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
