#!/usr/bin/env python3
"""Run a single-node Apache Kafka broker (KRaft, combined broker + controller) without Docker.

The broker is the official Apache Kafka build from Maven Central: ``pom.xml`` next to this file
resolves ``org.apache.kafka:kafka_2.13`` and an SLF4J binding into one folder of jars, which is
cached (``~/.cache/her2-kafka/<version>/libs``, or ``$HER2_KAFKA_JARS_DIR``) so Maven runs only
once. Java 17+ is required; Maven 3 only when the jar folder is still empty.

As a module (the integration tests use it this way)::

    with LocalKafka(tmp_path) as kafka:
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
        kafka.restart()   # same ports, same data

As a command line::

    python deploy/kafka/launcher.py start --dir /tmp/kafka [--port 9092]   # background
    python deploy/kafka/launcher.py stop --dir /tmp/kafka
    python deploy/kafka/launcher.py run --dir /tmp/kafka                   # foreground, Ctrl-C

Only the standard library is used, except kafka-python for the readiness probe.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

DEFAULT_VERSION = "4.3.1"
MIN_JAVA_MAJOR = 17
HOST = "127.0.0.1"
JARS_DIR_ENV = "HER2_KAFKA_JARS_DIR"

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LOG4J_CONFIG = HERE / "log4j2.properties"

JVM_OPTIONS = ("-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true")
MAVEN_TIMEOUT_S = 900.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 40

# Started next to the broker: it blocks on a pipe whose only write end the owning Python
# process holds. When that process dies, even by SIGKILL, the pipe reaches EOF and the
# watchdog stops the broker, so no orphan JVM keeps the ports and the disk.
_WATCHDOG_SOURCE = """
import os, signal, sys, time
pid = int(sys.argv[1])
sys.stdin.buffer.read()
try:
    os.kill(pid, signal.SIGTERM)
    for _ in range(int(float(sys.argv[2]) * 10)):
        time.sleep(0.1)
        os.kill(pid, 0)
    os.kill(pid, signal.SIGKILL)
except ProcessLookupError:
    pass
"""


class KafkaLauncherError(RuntimeError):
    """Java or Maven is missing, the jars cannot be resolved, or the broker did not come up."""


def log(message: str) -> None:
    """Print a progress message on stderr (stdout is reserved for the bootstrap address)."""
    print(f"[her2-kafka] {message}", file=sys.stderr, flush=True)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Return the last ``lines`` lines of a text file, or a note when it does not exist."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def first_errors(path: Path, limit: int = 12) -> str:
    """Return the first ERROR/FATAL log4j lines of a broker log, each with its exception line."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    picked: list[str] = []
    for index, line in enumerate(lines):
        if len(picked) >= limit:
            break
        if line.startswith("[") and (" ERROR " in line or " FATAL " in line):
            picked.append(line)
            following = lines[index + 1] if index + 1 < len(lines) else "["
            if not following.startswith("["):
                picked.append(following)
    return "\n".join(picked)


def default_jars_dir(version: str) -> Path:
    """Folder holding the broker jars: ``$HER2_KAFKA_JARS_DIR`` or the per-version user cache."""
    override = os.environ.get(JARS_DIR_ENV)
    if override:
        return Path(override).expanduser().resolve()
    return Path.home() / ".cache" / "her2-kafka" / version / "libs"


def resolve_jars(version: str = DEFAULT_VERSION, jars_dir: Path | None = None) -> Path:
    """Make sure ``jars_dir`` holds Kafka ``version`` and its dependencies; return the folder.

    Maven runs only when the folder has no ``kafka_2.13-<version>.jar`` yet. It resolves into a
    staging folder that is renamed into place, so parallel callers never see half a jar set.
    """
    target = jars_dir or default_jars_dir(version)
    marker = f"kafka_2.13-{version}.jar"
    if (target / marker).is_file():
        return target
    if target.is_dir() and any(target.iterdir()):
        raise KafkaLauncherError(
            f"{target} holds files but no {marker}; empty it or point {JARS_DIR_ENV} elsewhere "
            "(mixing jar sets of different Kafka versions on one classpath breaks the broker)"
        )
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaLauncherError(
            f"Maven ('mvn') is needed once to fetch the Kafka {version} jars into {target}: "
            f"install Maven 3, or fill that folder yourself with "
            f"'mvn -f {POM} dependency:copy-dependencies -DoutputDirectory={target}'"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    log(f"resolving Kafka {version} jars with Maven (first run only)…")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".resolving-", dir=target.parent) as staging_root:
        staging = Path(staging_root) / "libs"
        command = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            f"-Dkafka.version={version}",
        ]
        try:
            result = subprocess.run(  # noqa: S603 - fixed argv, no shell
                command, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise KafkaLauncherError(f"Maven did not finish within {MAVEN_TIMEOUT_S:.0f}s") from exc
        if result.returncode != 0 or not (staging / marker).is_file():
            output = "\n".join((result.stdout + result.stderr).splitlines()[-LOG_TAIL_LINES:])
            raise KafkaLauncherError(
                f"Maven could not resolve org.apache.kafka:kafka_2.13:{version} "
                f"(exit code {result.returncode}):\n{output}"
            )
        with contextlib.suppress(OSError):
            target.rmdir()  # an empty folder left by a cache restore would block the rename
        try:
            staging.rename(target)
        except OSError:
            if not (target / marker).is_file():  # not just another process finishing first
                raise
    log(f"resolved {len(list(target.glob('*.jar')))} jars in {time.monotonic() - started:.1f}s")
    return target


@functools.cache
def find_java() -> str:
    """Return the ``java`` executable ($JAVA_HOME first, then PATH), checking it is 17 or newer."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home, "bin", "java") if java_home else None
    java = str(candidate) if candidate and candidate.is_file() else shutil.which("java")
    if java is None:
        raise KafkaLauncherError(
            f"Java {MIN_JAVA_MAJOR}+ not found: install a JDK/JRE {MIN_JAVA_MAJOR} or newer "
            "(e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )
    result = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [java, "-version"], capture_output=True, text=True, timeout=60, check=False
    )
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is None:
        raise KafkaLauncherError(f"cannot tell the version of {java}: {result.stderr.strip()}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_392" style
        major = int(match.group(2))
    if major < MIN_JAVA_MAJOR:
        raise KafkaLauncherError(
            f"Kafka 4 needs Java {MIN_JAVA_MAJOR}+, but {java} is Java {major}"
        )
    return java


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports that are free on the loopback interface right now."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


def new_cluster_id() -> str:
    """Return a random Kafka cluster id (base64url of a UUID, as ``StorageTool random-uuid``)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):  # Kafka never hands out ids that look like options
            return cluster_id


def _escape_property(text: str, *, key: bool) -> str:
    """Escape text for a Java ``.properties`` file."""
    escaped = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    if key:
        for char in " =:#!":
            escaped = escaped.replace(char, "\\" + char)
    return escaped


class LocalKafka:
    """A single-node Apache Kafka broker (KRaft, combined broker + controller) in a child JVM.

    Everything lives in ``work_dir``: ``server.properties``, ``data/`` (the log dirs),
    ``logs/server.log`` (log4j), ``kafka.out`` (the JVM's stdout and stderr) and ``ports.json``
    (so that restarting, even from a new ``LocalKafka`` on the same folder, keeps the ports).
    Ports are free loopback ports picked at the first start unless ``port`` /
    ``controller_port`` are given. The broker is stopped at interpreter exit, and a small
    watchdog process stops it if this Python process is killed outright.

    ``extra_properties`` are written over the defaults (see :meth:`broker_properties`); this
    is how tests add or change broker settings, listeners included. Each name in
    ``extra_ports`` reserves one more free port, ``<name>_port``, picked together with the
    others and kept across restarts. In property values, ``{host}``, ``{port}``,
    ``{controller_port}`` and each ``{<name>_port}`` are replaced by the loopback address and
    the ports (all listed in :attr:`ports`). Keep the PLAINTEXT listener on ``{port}``:
    :attr:`bootstrap` and the readiness probe use it. A SASL_SSL listener with SCRAM, say,
    is added by overriding the three listener keys and giving that listener its settings::

        kafka = LocalKafka(work_dir, extra_ports=["sasl_ssl"], extra_properties={
            "listeners": "PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port},"
                         "SASL_SSL://{host}:{sasl_ssl_port}",
            "advertised.listeners": "PLAINTEXT://{host}:{port},SASL_SSL://{host}:{sasl_ssl_port}",
            "listener.security.protocol.map":
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL",
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": "...",
            "ssl.keystore.location": "...",
        })
        kafka.start()
        secure_bootstrap = f"127.0.0.1:{kafka.ports['sasl_ssl_port']}"

    SCRAM users can then be created over PLAINTEXT with kafka-python's
    ``KafkaAdminClient.alter_user_scram_credentials``. Static ``controller.quorum.voters``
    may replace the default ``controller.quorum.bootstrap.servers`` (storage is then
    formatted without ``--standalone``).
    """

    def __init__(
        self,
        work_dir: Path | str,
        version: str = DEFAULT_VERSION,
        extra_properties: Mapping[str, str] | None = None,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        extra_ports: Iterable[str] = (),
        jars_dir: Path | None = None,
    ) -> None:
        """Describe a broker; nothing happens on disk or in processes before :meth:`start`."""
        self.work_dir = Path(work_dir).resolve()
        self.version = version
        self.extra_properties = dict(extra_properties or {})
        self.jars_dir = jars_dir
        self._ports: dict[str, int | None] = {"port": port, "controller_port": controller_port}
        self._ports.update((f"{name}_port", None) for name in extra_ports)
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._watchdog_pipe: int | None = None

    @property
    def properties_file(self) -> Path:
        """The generated ``server.properties``."""
        return self.work_dir / "server.properties"

    @property
    def data_dir(self) -> Path:
        """The broker's ``log.dirs`` (also the KRaft metadata log)."""
        return self.work_dir / "data"

    @property
    def logs_dir(self) -> Path:
        """Where log4j writes ``server.log``."""
        return self.work_dir / "logs"

    @property
    def output_log(self) -> Path:
        """The JVM's stdout and stderr (start-up failures, GC warnings, storage formatting)."""
        return self.work_dir / "kafka.out"

    @property
    def ports(self) -> dict[str, int]:
        """``port``, ``controller_port`` and each ``<name>_port`` of ``extra_ports``.

        Chosen by the first :meth:`start`; raises before that.
        """
        chosen = {name: port for name, port in self._ports.items() if port is not None}
        if len(chosen) < len(self._ports):
            raise KafkaLauncherError("the broker has no ports yet: call start() first")
        return chosen

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` of the PLAINTEXT listener; known once :meth:`start` picked ports."""
        return f"{HOST}:{self.ports['port']}"

    @property
    def pid(self) -> int | None:
        """Process id of the broker JVM while it runs."""
        return self._process.pid if self.is_running() and self._process else None

    def is_running(self) -> bool:
        """Whether the broker JVM started by this object is alive."""
        return self._process is not None and self._process.poll() is None

    def broker_properties(self) -> dict[str, str]:
        """The broker configuration: single-node KRaft defaults, then ``extra_properties``."""
        ports = self.ports
        port, controller = ports["port"], ports["controller_port"]
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{HOST}:{controller}",
            "controller.listener.names": "CONTROLLER",
            "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",
            # After a crash (kill()), the new incarnation cannot register until the old one's
            # session expires: 4 s instead of the default 9 s keeps fault tests quick.
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "4000",
        }
        placeholders = {"{host}": HOST} | {f"{{{name}}}": str(p) for name, p in ports.items()}
        for key, value in self.extra_properties.items():
            for token, replacement in placeholders.items():
                value = value.replace(token, replacement)  # noqa: PLW2901
            properties[key] = value
        listener_ports = [item.rsplit(":", 1)[-1] for item in properties["listeners"].split(",")]
        if len(set(listener_ports)) < len(listener_ports):
            listeners = properties["listeners"]
            raise KafkaLauncherError(f"two listeners cannot share a port: {listeners}")
        return properties

    def start(self, timeout: float = 60.0) -> Self:
        """Start the broker and return once it answers a metadata request.

        The first call may resolve the jars with Maven (not counted in ``timeout``) and formats
        the storage; later calls (see :meth:`restart`) reuse ports and data. Raises
        :class:`KafkaLauncherError`, with the tail of the broker's logs, when it fails.
        """
        if self.is_running():
            raise KafkaLauncherError(f"the broker in {self.work_dir} is already running")
        java = find_java()
        jars = resolve_jars(self.version, self.jars_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._choose_ports()
        self._write_properties()
        self._format_storage(java, jars)
        self._spawn(java, jars)
        try:
            self._wait_until_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the broker: SIGTERM (a clean shutdown), then SIGKILL after ``timeout`` seconds."""
        self._terminate(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Kill the broker with SIGKILL, like a crash; :meth:`start` brings it back."""
        self._terminate(signal.SIGKILL, STOP_TIMEOUT_S)

    def restart(self, timeout: float = 60.0) -> Self:
        """Stop the broker cleanly and start it again on the same ports with the same data."""
        self.stop()
        return self.start(timeout)

    def wait(self) -> int:
        """Block until the broker exits on its own; return its exit code."""
        if self._process is None:
            raise KafkaLauncherError("the broker was not started")
        return self._process.wait()

    def __enter__(self) -> Self:
        """Start the broker (if not running) for a ``with`` block."""
        return self if self.is_running() else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the broker at the end of the ``with`` block."""
        self.stop()

    def _choose_ports(self) -> None:
        """Reuse the ports of an earlier start in ``work_dir``, pick free ones for the rest."""
        ports_file = self.work_dir / "ports.json"
        saved: dict[str, int] = {}
        if ports_file.is_file():
            saved = json.loads(ports_file.read_text(encoding="utf-8"))
        for name in self._ports:
            self._ports[name] = self._ports[name] or saved.get(name)
        missing = [name for name, port in self._ports.items() if port is None]
        self._ports.update(zip(missing, free_ports(len(missing)), strict=True))
        ports = self.ports
        if len(set(ports.values())) < len(ports):
            raise KafkaLauncherError(f"two listeners cannot share a port: {ports}")
        ports_file.write_text(json.dumps(ports, indent=2) + "\n", encoding="utf-8")

    def _write_properties(self) -> None:
        """Write ``server.properties`` from :meth:`broker_properties`."""
        lines = ["# Generated by deploy/kafka/launcher.py; rewritten at every start."]
        lines += [
            f"{_escape_property(key, key=True)}={_escape_property(value, key=False)}"
            for key, value in self.broker_properties().items()
        ]
        self.properties_file.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _java_command(self, java: str, jars: Path, main_class: str, *args: str) -> list[str]:
        """The ``java`` command line for a Kafka main class on the cached jar set."""
        return [
            java,
            *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp",
            str(jars / "*"),
            main_class,
            *args,
        ]

    def _format_storage(self, java: str, jars: Path) -> None:
        """Format the KRaft storage on the first start (``meta.properties`` marks it done)."""
        if (self.data_dir / "meta.properties").is_file():
            return
        args = ["format", "-t", new_cluster_id(), "-c", str(self.properties_file)]
        if "controller.quorum.voters" not in self.broker_properties():
            args.append("--standalone")
        command = self._java_command(java, jars, "kafka.tools.StorageTool", *args)
        with self.output_log.open("ab") as output:
            result = subprocess.run(  # noqa: S603 - fixed argv, no shell
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=120,
                check=False,
            )
        if result.returncode != 0:
            raise self._failure(f"formatting the storage failed (exit code {result.returncode})")

    def _spawn(self, java: str, jars: Path) -> None:
        """Start the broker JVM and its watchdog; output goes to :attr:`output_log`."""
        command = self._java_command(java, jars, "kafka.Kafka", str(self.properties_file))
        self._process, self._watchdog, self._watchdog_pipe = spawn_watched(
            command, self.output_log, self.work_dir
        )
        atexit.register(self.stop)

    def _wait_until_ready(self, timeout: float) -> None:
        """Poll the PLAINTEXT listener until the broker serves metadata with itself unfenced."""
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = self._process.returncode if self._process else None
                raise self._failure(f"the broker exited during start-up (exit code {code})")
            try:
                self._probe(max(1.0, deadline - time.monotonic()))
            except (OSError, KafkaLauncherError) as exc:
                last_error = str(exc) or type(exc).__name__
            except Exception as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                return
            time.sleep(0.2)
        raise self._failure(f"the broker did not answer within {timeout:.0f}s ({last_error})")

    def _probe(self, timeout: float) -> None:
        """Raise unless the broker answers a DescribeCluster request listing itself unfenced."""
        with socket.create_connection((HOST, self.ports["port"]), timeout=1.0):
            pass  # cheap gate before paying for a kafka-python client
        from kafka import KafkaAdminClient  # noqa: PLC0415 - optional, only for the probe

        timeout_ms = int(min(timeout, 5.0) * 1000)
        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            client_id="her2-launcher-probe",
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
        )
        try:
            brokers = admin.describe_cluster()["brokers"]
        finally:
            admin.close()
        if not any(not broker.get("is_fenced", False) for broker in brokers):
            raise KafkaLauncherError(f"no unfenced broker yet: {brokers}")

    def _terminate(self, sig: signal.Signals, timeout: float) -> None:
        """Stop the watchdog, then signal the broker and wait for it (SIGKILL after timeout)."""
        atexit.unregister(self.stop)
        watched = (self._process, self._watchdog, self._watchdog_pipe)
        self._process = self._watchdog = self._watchdog_pipe = None
        terminate_watched(*watched, sig, timeout)

    def _failure(self, reason: str) -> KafkaLauncherError:
        """An error carrying the broker's first errors and the tails of its log files."""
        server_log = self.logs_dir / "server.log"
        errors = first_errors(server_log)
        return KafkaLauncherError(
            f"Kafka {self.version} in {self.work_dir}: {reason}\n"
            + (f"--- first errors in {server_log} ---\n{errors}\n" if errors else "")
            + f"--- tail of {self.output_log} ---\n{tail(self.output_log)}\n"
            f"--- tail of {server_log} ---\n{tail(server_log)}"
        )


# Command line --------------------------------------------------------------------------------

_SUPERVISOR_PID = "launcher.pid"
_BROKER_PID = "broker.pid"
_BOOTSTRAP = "bootstrap"
_STATE_FILES = (_SUPERVISOR_PID, _BROKER_PID, _BOOTSTRAP)


def spawn_watched(
    command: list[str], output_log: Path, cwd: Path
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], int]:
    """Start `command` in a session of its own (output appended to `output_log`) and a watchdog
    that kills it when this process dies; returns (process, watchdog, watchdog pipe's write end).
    Shared with deploy/registry/launcher.py."""
    with output_log.open("ab") as output:
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )
    read_end, pipe = os.pipe()
    try:
        watchdog = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [sys.executable, "-c", _WATCHDOG_SOURCE, str(process.pid), str(STOP_TIMEOUT_S)],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        os.close(read_end)
    return process, watchdog, pipe


def terminate_watched(
    process: subprocess.Popen[bytes] | None,
    watchdog: subprocess.Popen[bytes] | None,
    pipe: int | None,
    sig: signal.Signals,
    timeout: float,
) -> None:
    """Stop the watchdog first (so it can never signal a reaped, reused pid), then signal the
    process and wait for it (SIGKILL after `timeout`)."""
    if watchdog is not None:
        watchdog.kill()
        watchdog.wait()
    if pipe is not None:
        os.close(pipe)
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _process_alive(pid: int, needle: str) -> bool:
    """Whether ``pid`` runs and (where /proc exists) its command line contains ``needle``."""
    proc = Path("/proc", str(pid))
    if Path("/proc/self").exists():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        state = stat.rsplit(")", 1)[-1].split()[0]
        return state not in {"Z", "X"} and needle in cmdline
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _read_pid(work_dir: Path, name: str) -> int | None:
    """The pid stored in ``work_dir/name``, if any."""
    try:
        return int((work_dir / name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _write_state(work_dir: Path, name: str, value: str) -> None:
    """Write one state file atomically (``start`` polls for the bootstrap file)."""
    temporary = work_dir / f".{name}.tmp"
    temporary.write_text(value + "\n", encoding="utf-8")
    temporary.replace(work_dir / name)


def _clear_state(work_dir: Path) -> None:
    """Remove the pid and bootstrap files."""
    for name in _STATE_FILES:
        (work_dir / name).unlink(missing_ok=True)


def _wait_gone(pid: int, needle: str, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for a process to exit; return whether it did."""
    deadline = time.monotonic() + timeout
    while _process_alive(pid, needle):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGINT/SIGTERM handler for ``run``: unwind so the broker is stopped cleanly."""
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:
    """Run a broker in the foreground until Ctrl-C or SIGTERM."""
    work_dir = Path(args.dir).resolve()
    kafka = LocalKafka(work_dir, args.version, port=args.port)
    for signum in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored
        signal.signal(signum, _raise_keyboard_interrupt)
    try:
        kafka.start(args.timeout)
        _write_state(work_dir, _SUPERVISOR_PID, str(os.getpid()))
        _write_state(work_dir, _BROKER_PID, str(kafka.pid))
        _write_state(work_dir, _BOOTSTRAP, kafka.bootstrap)
        log(f"broker ready at {kafka.bootstrap} (logs in {kafka.logs_dir}; Ctrl-C stops it)")
        print(kafka.bootstrap, flush=True)
        code = kafka.wait()
        log(f"the broker exited on its own (exit code {code}); see {kafka.output_log}")
        return 1
    except KeyboardInterrupt:
        log("stopping the broker…")
        return 0
    except KafkaLauncherError as exc:
        log(str(exc))
        return 1
    finally:
        kafka.stop()
        _clear_state(work_dir)


def cmd_start(args: argparse.Namespace) -> int:
    """Start ``run`` detached in the background, wait until the broker is ready, print it."""
    work_dir = Path(args.dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    running = _read_pid(work_dir, _SUPERVISOR_PID)
    if running is not None and _process_alive(running, "launcher.py"):
        log(f"a broker is already running from {work_dir} (pid {running})")
        return 1
    _clear_state(work_dir)
    try:
        find_java()
        resolve_jars(args.version)  # in the foreground, so first-run progress is visible
    except KafkaLauncherError as exc:
        log(str(exc))
        return 1
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "run",
        "--dir",
        str(work_dir),
        "--version",
        args.version,
        "--timeout",
        str(args.timeout),
    ]
    if args.port is not None:
        command += ["--port", str(args.port)]
    launcher_log = work_dir / "launcher.log"
    with launcher_log.open("ab") as output:
        supervisor = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    while not (work_dir / _BOOTSTRAP).is_file():
        if supervisor.poll() is not None:
            log(f"the broker did not start:\n{tail(launcher_log)}")
            return 1
        time.sleep(0.2)
    bootstrap = (work_dir / _BOOTSTRAP).read_text(encoding="utf-8").strip()
    log(f"broker ready at {bootstrap} (stop it with: {Path(__file__).name} stop --dir {work_dir})")
    print(bootstrap, flush=True)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop a broker started with ``start`` (or ``run``) on ``--dir``."""
    work_dir = Path(args.dir).resolve()
    supervisor = _read_pid(work_dir, _SUPERVISOR_PID)
    broker = _read_pid(work_dir, _BROKER_PID)
    stopped = False
    if supervisor is not None and _process_alive(supervisor, "launcher.py"):
        os.kill(supervisor, signal.SIGTERM)
        if not _wait_gone(supervisor, "launcher.py", STOP_TIMEOUT_S + 10):
            os.kill(supervisor, signal.SIGKILL)  # its watchdog then stops the broker
        stopped = True
    if broker is not None and _process_alive(broker, "kafka.Kafka"):
        if stopped:
            stopped = _wait_gone(broker, "kafka.Kafka", STOP_TIMEOUT_S)
        if not stopped:
            os.kill(broker, signal.SIGTERM)
            if not _wait_gone(broker, "kafka.Kafka", STOP_TIMEOUT_S):
                os.kill(broker, signal.SIGKILL)
            stopped = True
    _clear_state(work_dir)
    log(f"broker in {work_dir} stopped" if stopped else f"no broker was running in {work_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the command line."""
    parser = argparse.ArgumentParser(
        prog="launcher.py",
        description="Run a single-node Apache Kafka (KRaft) broker from the Maven Central jars.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, handler, summary in (
        ("start", cmd_start, "start a broker in the background and print its bootstrap address"),
        ("run", cmd_run, "run a broker in the foreground until Ctrl-C"),
        ("stop", cmd_stop, "stop the broker started on --dir"),
    ):
        command = commands.add_parser(name, help=summary, description=summary)
        command.set_defaults(handler=handler)
        command.add_argument("--dir", required=True, help="work folder: config, data, logs, pid")
        if name != "stop":
            command.add_argument("--port", type=int, help="PLAINTEXT port (default: a free one)")
            command.add_argument("--version", default=DEFAULT_VERSION, help="Kafka version")
            command.add_argument(
                "--timeout", type=float, default=60.0, help="seconds to wait for readiness"
            )
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
