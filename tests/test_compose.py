"""The docker-compose stack, checked statically: no Docker, just the files and segstream's config.

Expectations are derived from the compose file, the files it mounts, the
Dockerfile and ``segstream.config.load_config``, so that a change to any one of
them that the others do not follow fails here rather than in a running stack.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from segstream import metrics
from segstream.cli import build_parser
from segstream.config import Config, load_config, load_segments

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
SHARDS_FILE = REPO / "docker-compose.shards.yml"
"""An override of the stack: two shards instead of one worker."""

# Service names are the stack's identifiers, not expectations about its values.
KAFKA, TOPIC_JOB, REDIS, WORKER = "kafka", "kafka-init", "redis", "worker"
PROMETHEUS, GRAFANA, REPLAY = "prometheus", "grafana", "replay"

# Keys of a service in the Compose Specification: `docker compose` rejects any
# other, and no Docker runs here to tell us.
COMPOSE_SERVICE_KEYS = frozenset("""
annotations attach blkio_config build cap_add cap_drop cgroup cgroup_parent command configs
container_name cpu_count cpu_percent cpu_period cpu_quota cpu_rt_period cpu_rt_runtime cpu_shares
cpus cpuset credential_spec depends_on deploy develop device_cgroup_rules devices dns dns_opt
dns_search domainname entrypoint env_file environment expose extends external_links extra_hosts
gpus group_add healthcheck hostname image init ipc isolation label_file labels links logging
mac_address mem_limit mem_reservation mem_swappiness memswap_limit network_mode networks
oom_kill_disable oom_score_adj pid pids_limit platform ports post_start pre_stop privileged
profiles pull_policy read_only restart runtime scale secrets security_opt shm_size stdin_open
stop_grace_period stop_signal storage_opt sysctls tmpfs tty ulimits user userns_mode uts
volumes volumes_from working_dir
""".split())
COMPOSE_TOP_KEYS = frozenset({"name", "version", "services", "networks", "volumes", "configs",
                              "secrets", "include", "models"})
HEALTHCHECK_KEYS = frozenset({"test", "interval", "timeout", "retries", "start_period",
                              "start_interval", "disable"})
DEPENDS_ON_CONDITIONS = frozenset({"service_started", "service_healthy",
                                   "service_completed_successfully"})
# Docker's own default: without stop_grace_period, SIGKILL follows SIGTERM after 10 s.
DOCKER_DEFAULT_STOP_GRACE_S = 10.0


# --- reading the compose file ----------------------------------------------------------

_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])((?:[^{}]|\{[^{}]*\})*))?\}"
                  r"|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Apply Compose's ``${VAR:-default}`` interpolation to every string in ``value``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(5)
        op, arg = m.group(3), m.group(4) or ""
        current = env.get(name)
        if op in (":-", "-"):
            unset = current is None or (op == ":-" and current == "")
            return arg if unset else current  # type: ignore[return-value]
        if op in (":?", "?"):
            if current is None or (op == ":?" and current == ""):
                raise AssertionError(f"${{{name}}} is required by the compose file: {arg}")
            return current
        if op in (":+", "+"):
            return arg if current else ""
        return current or ""

    return _VAR.sub(one, value)


# Sequences an override replaces rather than extends (Compose's merge rules).
REPLACED_SEQUENCES = frozenset({"command", "entrypoint", "test"})


def volume_target(item: str | dict[str, Any]) -> str:
    if isinstance(item, dict):
        return str(item["target"])
    parts = item.split(":")
    return parts[0] if len(parts) == 1 else parts[1]


def merge(base: Any, override: Any, key: str = "") -> Any:
    """Merge an override file into a compose file as ``docker compose -f A -f B`` does.

    Mappings merge key by key; ``command``, ``entrypoint`` and a healthcheck's
    ``test`` are replaced; a service's ``volumes`` merge by container path;
    other sequences (``ports``, ``expose``...) gain the override's new entries.
    """
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for name, value in override.items():
            out[name] = merge(base[name], value, name) if name in base else value
        return out
    if isinstance(base, list) and isinstance(override, list) and key not in REPLACED_SEQUENCES:
        if key == "volumes":
            replaced = {volume_target(item) for item in override}
            return [item for item in base if volume_target(item) not in replaced] + override
        return base + [item for item in override if item not in base]
    return override


def load_stack(*files: Path) -> dict[str, Any]:
    """Compose files merged in order, as Compose reads them with an empty shell environment."""
    merged: dict[str, Any] = {}
    for file in files:
        merged = merge(merged, yaml.safe_load(file.read_text(encoding="utf-8")))
    return interpolate(merged, env={})  # type: ignore[no-any-return]


STACKS = {"one worker": (COMPOSE_FILE,), "two shards": (COMPOSE_FILE, SHARDS_FILE)}


@pytest.fixture(scope="module", params=list(STACKS))
def compose(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The stack; every check runs on the compose file alone and merged with the shards override."""
    return load_stack(*STACKS[request.param])


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services = compose["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    return services[name]  # type: ignore[no-any-return]


def environment(svc: dict[str, Any]) -> dict[str, str]:
    """A service's environment as strings (mapping or KEY=VALUE list; env_file too)."""
    env: dict[str, str] = {}
    env_files = svc.get("env_file") or []
    for item in [env_files] if isinstance(env_files, str | dict) else env_files:
        path = item["path"] if isinstance(item, dict) else item
        for line in (REPO / path).read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.lstrip().startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                env[key.strip()] = value.strip().strip("'\"")
    raw = svc.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.partition("=")[::2] for item in raw)
    for key, value in raw.items():
        env[key] = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return env


@dataclass(frozen=True)
class Mount:
    kind: str  # "bind", "volume" (named) or "anonymous"
    source: str
    target: str
    read_only: bool


def mounts(compose: dict[str, Any], svc: dict[str, Any]) -> list[Mount]:
    out = []
    for item in svc.get("volumes") or []:
        if isinstance(item, dict):
            source, target = item.get("source", ""), item["target"]
            read_only = bool(item.get("read_only"))
            kind = item.get("type", "volume")
        else:
            parts = item.split(":")
            if len(parts) == 1:
                source, target, mode = "", parts[0], ""
            else:
                source, target, mode = parts[0], parts[1], (parts[2] if len(parts) > 2 else "")
            read_only = "ro" in mode.split(",")
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        if kind == "volume" and not source:
            kind = "anonymous"
        if kind == "volume":
            assert source in (compose.get("volumes") or {}), (
                f"named volume {source!r} is not declared under top-level volumes:")
        out.append(Mount(kind, source, target, read_only))
    return out


def covering_mount(compose: dict[str, Any], svc: dict[str, Any], path: str) -> Mount | None:
    """The mount that holds container ``path`` (the deepest one, as in the container)."""
    hits = [m for m in mounts(compose, svc)
            if PurePosixPath(path) == PurePosixPath(m.target)
            or PurePosixPath(m.target) in PurePosixPath(path).parents]
    return max(hits, key=lambda m: len(m.target), default=None)


def host_path(compose: dict[str, Any], svc: dict[str, Any], path: str) -> Path | None:
    """The repo path that container ``path`` is bind-mounted from, if it is."""
    mount = covering_mount(compose, svc, path)
    if mount is None or mount.kind != "bind":
        return None
    rest = PurePosixPath(path).relative_to(mount.target)
    return (COMPOSE_FILE.parent / mount.source / rest).resolve()


def argv(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def script_commands(svc: dict[str, Any]) -> list[list[str]]:
    """The commands of a service run as ``sh -c SCRIPT``, one argv per line (``exec`` dropped)."""
    full = argv(svc.get("entrypoint")) + argv(svc.get("command"))
    assert len(full) >= 3 and PurePosixPath(full[0]).name in ("sh", "bash") and full[1] == "-c", (
        f"expected `sh -c SCRIPT`, got {full}")
    commands = []
    for line in full[2].replace("\\\n", " ").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            words = shlex.split(line)
            commands.append(words[1:] if words[0] == "exec" else words)
    return commands


def option(words: list[str], name: str) -> list[str]:
    """Every value of ``--name VALUE`` / ``--name=VALUE`` in ``words``."""
    values = []
    for i, word in enumerate(words):
        if word == name and i + 1 < len(words):
            values.append(words[i + 1])
        elif word.startswith(name + "="):
            values.append(word.split("=", 1)[1])
    return values


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def duration_s(text: str | int | float) -> float:
    if isinstance(text, int | float):
        return float(text)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def published_ports(svc: dict[str, Any]) -> list[tuple[str, int, int]]:
    """``(host_ip, host_port, container_port)`` of every published port."""
    out = []
    for item in svc.get("ports") or []:
        if isinstance(item, dict):
            out.append((item.get("host_ip", ""), int(item["published"]), int(item["target"])))
            continue
        parts = str(item).split("/")[0].split(":")
        if len(parts) == 3:
            out.append((parts[0], int(parts[1]), int(parts[2])))
        elif len(parts) == 2:
            out.append(("", int(parts[0]), int(parts[1])))
        else:
            out.append(("", 0, int(parts[0])))
    return out


def container_ports(svc: dict[str, Any]) -> set[int]:
    """Ports a service offers to the compose network (``expose`` and ``ports``)."""
    exposed = {int(str(p).split("/")[0]) for p in svc.get("expose") or []}
    return exposed | {target for _, _, target in published_ports(svc)}


def image_tag(image: str) -> str | None:
    """The tag of ``repo[:tag][@digest]`` (a digest counts as pinned)."""
    if "@" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


# --- the stack's derived facts -----------------------------------------------------------


def kafka_listeners(env: dict[str, str], key: str) -> dict[str, tuple[str, int]]:
    """``KAFKA_LISTENERS``-style ``NAME://host:port,...`` as ``{NAME: (host, port)}``."""
    out = {}
    for item in filter(None, (part.strip() for part in env.get(key, "").split(","))):
        name, _, address = item.partition("://")
        out[name] = host_port(address)
    return out


def kafka_network_names(compose: dict[str, Any]) -> set[str]:
    svc = service(compose, KAFKA)
    names = {KAFKA} | ({svc["hostname"]} if svc.get("hostname") else set())
    networks = svc.get("networks")
    if isinstance(networks, dict):
        for net in networks.values():
            names |= set((net or {}).get("aliases") or [])
    return names


def assert_in_network_kafka(compose: dict[str, Any], brokers: Iterable[str], who: str,
                            protocol: str | None = None) -> None:
    """Each bootstrap address names the kafka service on a listener advertised under that name."""
    env = environment(service(compose, KAFKA))
    listeners = kafka_listeners(env, "KAFKA_LISTENERS")
    advertised = kafka_listeners(env, "KAFKA_ADVERTISED_LISTENERS")
    controllers = set(env.get("KAFKA_CONTROLLER_LISTENER_NAMES", "").split(","))
    protocols = dict(p.split(":") for p in env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "").split(",")
                     if p)
    names = kafka_network_names(compose)
    brokers = list(brokers)
    assert brokers, f"{who}: no brokers"
    for broker in brokers:
        host, port = host_port(broker)
        assert host in names, f"{who}: broker {broker!r} is not the {KAFKA!r} service ({names})"
        on_port = [n for n, (_, p) in listeners.items() if p == port and n not in controllers]
        assert on_port, f"{who}: kafka has no client listener on port {port} ({listeners})"
        # After bootstrap, clients connect to the advertised address: it must
        # resolve inside the network too, or the first metadata reply strands them.
        assert on_port[0] in advertised, f"{who}: listener {on_port[0]} is not advertised"
        adv_host, adv_port = advertised[on_port[0]]
        assert adv_host in names and adv_port == port, (
            f"{who}: {broker} reaches listener {on_port[0]}, which advertises "
            f"{adv_host}:{adv_port}, not reachable as such inside the compose network")
        if protocol is not None:
            assert protocols.get(on_port[0], on_port[0]).upper() == protocol.upper(), (
                f"{who}: listener {on_port[0]} speaks {protocols.get(on_port[0])}, client uses {protocol}")


def worker_config_path(compose: dict[str, Any], name: str = WORKER) -> Path:
    svc = service(compose, name)
    words = argv(svc.get("command"))
    paths = option(words, "--config") or [environment(svc).get("SEGSTREAM_CONFIG", "")]
    assert paths[0], f"{name} is given no config file (--config or SEGSTREAM_CONFIG)"
    path = host_path(compose, svc, paths[0])
    assert path is not None, f"{name}'s config {paths[0]} is not bind-mounted from the repo"
    return path


def run_services(compose: dict[str, Any]) -> dict[str, Config]:
    """Every service that runs ``segstream run``, with its effective config."""
    context, dockerfile = repo_dockerfile(compose)
    return {name: load_config(worker_config_path(compose, name), env=environment(svc))
            for name, svc in compose["services"].items()
            if build_of(svc) == (context, dockerfile) and argv(svc.get("command"))[:1] == ["run"]}


@pytest.fixture(scope="module")
def worker_config(compose: dict[str, Any]) -> Config:
    """The worker's effective config: its mounted file plus its environment."""
    svc = service(compose, WORKER)
    return load_config(worker_config_path(compose), env=environment(svc))


def created_topics(compose: dict[str, Any], job: str = TOPIC_JOB) -> dict[str, list[str]]:
    """``{topic: its kafka-topics.sh --create argv}`` of a topic job."""
    out = {}
    for words in script_commands(service(compose, job)):
        if PurePosixPath(words[0]).name == "kafka-topics.sh" and "--create" in words:
            (topic,) = option(words, "--topic")
            out[topic] = words
    return out


def prometheus_config(compose: dict[str, Any]) -> dict[str, Any]:
    svc = service(compose, PROMETHEUS)
    (path,) = option(argv(svc.get("command")), "--config.file")
    file = host_path(compose, svc, path)
    assert file is not None, f"Prometheus' {path} is not bind-mounted from the repo"
    return yaml.safe_load(file.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def grafana_provisioning(compose: dict[str, Any], kind: str) -> Iterator[dict[str, Any]]:
    svc = service(compose, GRAFANA)
    base = environment(svc).get("GF_PATHS_PROVISIONING", "/etc/grafana/provisioning")
    directory = host_path(compose, svc, f"{base}/{kind}")
    assert directory is not None and directory.is_dir(), f"no provisioned {kind} for Grafana"
    files = sorted([*directory.glob("*.yml"), *directory.glob("*.yaml")])
    assert files, f"no {kind} files in {directory}"
    for file in files:
        yield yaml.safe_load(file.read_text(encoding="utf-8"))


# --- reading the Dockerfile ----------------------------------------------------------------


def dockerfile_stages(path: Path) -> list[list[tuple[str, str]]]:
    """Instructions ``(KEYWORD, rest)`` per build stage, continuations joined."""
    stages: list[list[tuple[str, str]]] = []
    buffer = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        keyword, _, rest = (buffer + stripped).partition(" ")
        buffer = ""
        if keyword.upper() == "FROM":
            stages.append([])
        assert stages, f"{path}: instruction before FROM"
        stages[-1].append((keyword.upper(), rest.strip()))
    return stages


def exec_form(rest: str) -> list[str] | None:
    return json.loads(rest) if rest.startswith("[") else None  # type: ignore[no-any-return]


def copy_sources(rest: str) -> tuple[list[str], dict[str, str]]:
    words = exec_form(rest) or shlex.split(rest)
    flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
    paths = [w for w in words if not w.startswith("--")]
    return paths[:-1], flags


def dockerignore_rules(context: Path) -> list[tuple[bool, re.Pattern[str]]]:
    file = context / ".dockerignore"
    rules = []
    for line in file.read_text(encoding="utf-8").splitlines() if file.exists() else []:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(regex)))
    return rules


def in_build_context(rules: list[tuple[bool, re.Pattern[str]]], relative: str) -> bool:
    """Docker's rule: the last pattern matching the path or a parent of it decides."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    included = True
    for negate, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            included = negate
    return included


def build_of(svc: dict[str, Any]) -> tuple[Path, Path] | None:
    """``(context, Dockerfile)`` of a service that builds its image."""
    build = svc.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        build = {"context": build}
    context = (COMPOSE_FILE.parent / build.get("context", ".")).resolve()
    return context, context / build.get("dockerfile", "Dockerfile")


def repo_dockerfile(compose: dict[str, Any]) -> tuple[Path, Path]:
    built = build_of(service(compose, WORKER))
    assert built is not None, "the worker is not built from the repo"
    return built


# --- the tests -------------------------------------------------------------------------------


def test_compose_file_uses_only_known_keys(compose: dict[str, Any]) -> None:
    """Every top-level, service, healthcheck, depends_on and restart entry is one Compose accepts."""
    assert set(compose) - COMPOSE_TOP_KEYS <= {k for k in compose if k.startswith("x-")}
    for name, svc in compose["services"].items():
        assert set(svc) <= COMPOSE_SERVICE_KEYS, f"{name}: unknown keys {set(svc) - COMPOSE_SERVICE_KEYS}"
        assert set(svc.get("healthcheck") or {}) <= HEALTHCHECK_KEYS, name
        restart = svc.get("restart", "no")
        assert restart in ("no", "always", "unless-stopped") or re.fullmatch(
            r"on-failure(:\d+)?", str(restart)), f"{name}: restart {restart!r} (quote 'no')"
        depends = svc.get("depends_on") or {}
        for dep, spec in (depends.items() if isinstance(depends, dict) else []):
            assert dep in compose["services"], f"{name} depends on unknown service {dep}"
            assert (spec or {}).get("condition", "service_started") in DEPENDS_ON_CONDITIONS
        for dep in depends if isinstance(depends, list) else []:
            assert dep in compose["services"], f"{name} depends on unknown service {dep}"


def test_every_image_is_pinned(compose: dict[str, Any]) -> None:
    """Every image in the compose file and every Dockerfile base image has a tag that is not `latest`."""
    images = {f"service {n}": s["image"] for n, s in compose["services"].items() if "image" in s}
    for name, svc in compose["services"].items():
        assert "image" in svc or "build" in svc, f"{name} has neither image nor build"
        built = build_of(svc)
        if built is not None:
            stages: set[str] = set()
            for stage in dockerfile_stages(built[1]):
                words = stage[0][1].split()
                if words[0] not in stages:
                    images[f"{built[1].name} FROM"] = words[0]
                if len(words) == 3 and words[1].upper() == "AS":
                    stages.add(words[2])
    assert images
    for where, image in images.items():
        tag = image_tag(image)
        assert tag and tag != "latest", f"{where}: image {image!r} is not pinned to a tag"


def test_every_build_context_has_its_dockerfile(compose: dict[str, Any]) -> None:
    """Each `build` names an existing context directory holding its Dockerfile."""
    builds = [build_of(s) for s in compose["services"].values() if "build" in s]
    assert builds
    for context, dockerfile in filter(None, builds):
        assert context.is_dir(), context
        assert dockerfile.is_file(), dockerfile


def test_every_mounted_or_referenced_host_file_exists(compose: dict[str, Any]) -> None:
    """Bind-mount sources exist, and so does every container path a service names under a bind mount."""
    for name, svc in compose["services"].items():
        for mount in mounts(compose, svc):
            if mount.kind == "bind":
                assert (COMPOSE_FILE.parent / mount.source).exists(), f"{name}: {mount.source} missing"
        words = argv(svc.get("entrypoint")) + argv(svc.get("command"))
        named = [w.split("=", 1)[-1] for w in words] + list(environment(svc).values())
        for path in (p for p in named if p.startswith("/")):
            file = host_path(compose, svc, path)
            if file is not None:
                assert file.exists(), f"{name} refers to {path}, mounted from {file}, which is missing"


def test_build_context_holds_what_the_dockerfile_copies(compose: dict[str, Any]) -> None:
    """What the Dockerfile COPYs, and every file `pip install .` needs, survives .dockerignore."""
    context, dockerfile = repo_dockerfile(compose)
    rules = dockerignore_rules(context)
    copied: set[str] = set()
    for stage in dockerfile_stages(dockerfile):
        for keyword, rest in stage:
            if keyword in ("COPY", "ADD"):
                sources, flags = copy_sources(rest)
                if "from" not in flags:
                    copied |= {PurePosixPath(s).as_posix().strip("/") for s in sources}
    pyproject = tomllib.loads((context / "pyproject.toml").read_text(encoding="utf-8"))
    needed = {"pyproject.toml", pyproject["project"]["readme"],
              *(Path(d).parts[0] for d in pyproject["tool"]["setuptools"]["package-dir"].values())}
    assert needed <= copied, f"pip install . needs {needed - copied}, which the Dockerfile does not COPY"
    for source in copied:
        assert (context / source).exists(), f"COPY {source}: not in the build context"
        assert in_build_context(rules, source), f"COPY {source}: excluded by .dockerignore"
        files = [p for p in (context / source).rglob("*") if p.is_file()] or [context / source]
        for file in files:
            relative = file.relative_to(context).as_posix()
            if file.suffix == ".py" or relative in needed:
                assert in_build_context(rules, relative), f"{relative} is excluded by .dockerignore"


def test_image_runs_segstream_as_non_root_in_exec_form(compose: dict[str, Any]) -> None:
    """The final stage runs as a non-root user with ENTRYPOINT exec-form `segstream`, the console script."""
    context, dockerfile = repo_dockerfile(compose)
    final = dockerfile_stages(dockerfile)[-1]
    users = [rest.split(":")[0] for keyword, rest in final if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image runs as root"
    entrypoints = [rest for keyword, rest in final if keyword == "ENTRYPOINT"]
    assert entrypoints, "no ENTRYPOINT"
    scripts = tomllib.loads((context / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    form = exec_form(entrypoints[-1])
    assert form is not None, "shell-form ENTRYPOINT: a shell as PID 1 does not pass SIGTERM on"
    assert form[0] in scripts, f"ENTRYPOINT {form} is not a console script of the project"


def test_named_volumes_of_the_image_are_owned_by_its_user(compose: dict[str, Any]) -> None:
    """Every named volume mounted into the repo image is a directory the image creates for its user."""
    context, dockerfile = repo_dockerfile(compose)
    final = dockerfile_stages(dockerfile)[-1]
    user = [rest.split(":")[0] for keyword, rest in final if keyword == "USER"][-1]
    runs = [shlex.split(rest) for keyword, rest in final if keyword == "RUN"]
    targets = {m.target for svc in compose["services"].values() if build_of(svc) == (context, dockerfile)
               for m in mounts(compose, svc) if m.kind == "volume"}
    assert targets
    for target in targets:
        # A new named volume takes the owner of the image directory it covers.
        assert any(target in words and user in words for words in runs), (
            f"{target} is not created for user {user!r} in the image: the volume would be root-owned")


def test_every_segstream_command_in_the_stack_parses(compose: dict[str, Any]) -> None:
    """Every `segstream` command line the stack runs (ENTRYPOINT + command, or in a script) parses."""
    context, dockerfile = repo_dockerfile(compose)
    final = dockerfile_stages(dockerfile)[-1]
    entrypoint = exec_form([rest for keyword, rest in final if keyword == "ENTRYPOINT"][-1]) or []
    image_cmd = exec_form(([rest for keyword, rest in final if keyword == "CMD"] or ["[]"])[-1]) or []
    lines = []
    for name, svc in compose["services"].items():
        if build_of(svc) != (context, dockerfile):
            continue
        if "entrypoint" in svc:
            lines += [(name, w[1:]) for w in script_commands(svc) if w[0] == entrypoint[0]]
        else:
            lines.append((name, argv(svc["command"]) if "command" in svc else image_cmd))
    assert lines
    for name, words in lines:
        try:
            build_parser().parse_args(words)
        except SystemExit as exc:
            pytest.fail(f"{name}: `segstream {shlex.join(words)}` does not parse (exit {exc.code})")


def test_segstream_variables_of_every_service_are_known_settings(compose: dict[str, Any]) -> None:
    """Every service's `SEGSTREAM_*` environment loads with deploy/segstream.toml (unknown names raise)."""
    config_file = worker_config_path(compose)
    assert config_file == (REPO / "deploy" / "segstream.toml").resolve()
    users = 0
    for svc in compose["services"].values():
        env = environment(svc)
        users += any(k.startswith("SEGSTREAM_") for k in env)
        load_config(config_file, env=env)
    assert users, "no service sets SEGSTREAM_* variables"


def test_deploy_config_loads_alone() -> None:
    """deploy/segstream.toml is a valid config by itself, segments file included."""
    config = load_config(REPO / "deploy" / "segstream.toml", env={})
    if not config.segments_file.startswith("/"):
        load_segments(config.segments_file)


def test_worker_segments_file_is_mounted(compose: dict[str, Any], worker_config: Config) -> None:
    """A segments file the worker is told to read is mounted from the repo and valid."""
    if worker_config.segments_file:
        file = host_path(compose, service(compose, WORKER), worker_config.segments_file)
        assert file is not None, f"{worker_config.segments_file} is not mounted into the worker"
        load_segments(file)


def test_worker_brokers_are_kafka_inside_the_network(compose: dict[str, Any], worker_config: Config) -> None:
    """The worker bootstraps from the kafka service on an in-network listener of its own protocol."""
    protocol = dict(worker_config.kafka_options).get("security.protocol", "PLAINTEXT")
    assert_in_network_kafka(compose, worker_config.brokers, WORKER, protocol)


def test_worker_redis_url_names_the_redis_service(compose: dict[str, Any], worker_config: Config) -> None:
    """The worker's redis_url is the redis service on the port redis-server listens on."""
    url = urlsplit(worker_config.redis_url)
    assert url.hostname == REDIS
    listen = option(argv(service(compose, REDIS).get("command")), "--port") or ["6379"]
    assert (url.port or 6379) == int(listen[-1])


def test_worker_metrics_port_is_exposed_scraped_and_health_checked(
    compose: dict[str, Any], worker_config: Config,
) -> None:
    """metrics_port is the port the worker exposes, Prometheus scrapes and the healthcheck calls."""
    port = worker_config.metrics_port
    svc = service(compose, WORKER)
    assert port and port in container_ports(svc), f"worker does not expose metrics_port {port}"
    scraped = []
    for job in prometheus_config(compose)["scrape_configs"]:
        for static in job.get("static_configs") or []:
            for target in static["targets"]:
                host, target_port = host_port(target)
                if host == WORKER:
                    scraped.append(target_port)
                    assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]
    assert scraped, "Prometheus does not scrape the worker"
    assert set(scraped) == {port}, f"Prometheus scrapes worker ports {scraped}, metrics_port is {port}"
    check = " ".join(argv(svc["healthcheck"]["test"]))
    assert f"127.0.0.1:{port}/healthz" in check or f"localhost:{port}/healthz" in check, check


def test_worker_topics_are_exactly_those_kafka_init_creates(
    compose: dict[str, Any], worker_config: Config,
) -> None:
    """kafka-init creates exactly the worker's input, output, DLQ and model-events topics, fail-fast."""
    topics = created_topics(compose)
    wanted = {*worker_config.input_topics, worker_config.output_topic, worker_config.dlq_topic,
              worker_config.model_events_topic}
    assert set(topics) == wanted
    voters = environment(service(compose, KAFKA))["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    for topic, words in topics.items():
        assert "--if-not-exists" in words, f"{topic}: a second `up` would fail on an existing topic"
        assert int(option(words, "--replication-factor")[0]) <= len(voters), topic
        assert int(option(words, "--partitions")[0]) >= 1, topic
        assert_in_network_kafka(compose, option(words, "--bootstrap-server"), TOPIC_JOB)
    script = (argv(service(compose, TOPIC_JOB).get("entrypoint"))
              + argv(service(compose, TOPIC_JOB).get("command")))[2]
    assert re.search(r"^\s*set -\w*e", script, re.M), "kafka-init would exit 0 after a failed create"


def test_worker_recovery_dir_is_on_a_named_volume(compose: dict[str, Any], worker_config: Config) -> None:
    """recovery_dir is an absolute path on a writable named volume, so snapshots outlive the container."""
    assert worker_config.recovery_dir.startswith("/"), "recovery off, or relative to the workdir"
    mount = covering_mount(compose, service(compose, WORKER), worker_config.recovery_dir)
    assert mount is not None and mount.kind == "volume", f"{worker_config.recovery_dir} is not on a volume"
    assert not mount.read_only


def test_worker_starts_after_topics_and_redis(compose: dict[str, Any]) -> None:
    """The worker waits for kafka-init to succeed and redis to be healthy, and every wait can be met."""
    depends = service(compose, WORKER)["depends_on"]
    assert depends[TOPIC_JOB]["condition"] == "service_completed_successfully"
    assert depends[REDIS]["condition"] == "service_healthy"
    for name, svc in compose["services"].items():
        deps = svc.get("depends_on") or {}
        for dep, spec in (deps.items() if isinstance(deps, dict) else []):
            target = service(compose, dep)
            condition = (spec or {}).get("condition")
            if condition == "service_healthy":
                assert target.get("healthcheck") and not target["healthcheck"].get("disable"), (
                    f"{name} waits for {dep} to be healthy, which has no healthcheck")
            if condition == "service_completed_successfully":
                assert target.get("restart", "no") in ("no",) or str(target["restart"]).startswith(
                    "on-failure"), f"{name} waits for {dep} to exit, which is restarted forever"
                assert not target.get("profiles"), f"{name} waits for {dep}, which is not always started"


def test_worker_stops_cleanly_on_sigterm(compose: dict[str, Any]) -> None:
    """SIGTERM reaches segstream itself, with more grace than Docker's default, and the worker restarts."""
    svc = service(compose, WORKER)
    assert svc.get("stop_signal", "SIGTERM") in ("SIGTERM", "TERM", "15")
    assert "entrypoint" not in svc, "an entrypoint override would put a shell in front of segstream"
    assert argv(svc.get("command"))[0] == "run"
    assert duration_s(svc.get("stop_grace_period", "10s")) > DOCKER_DEFAULT_STOP_GRACE_S
    assert svc.get("restart") in ("unless-stopped", "always")


def test_kafka_is_kraft_without_zookeeper_and_without_auto_create(compose: dict[str, Any]) -> None:
    """Kafka is one combined KRaft node voting for itself on its controller listener, without auto-create."""
    env = environment(service(compose, KAFKA))
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env.get("CLUSTER_ID"), "KRaft storage needs a fixed CLUSTER_ID"
    assert not any("ZOOKEEPER" in key for key in env)
    assert not any("zookeeper" in str(s.get("image", "")) for s in compose["services"].values())
    listeners = kafka_listeners(env, "KAFKA_LISTENERS")
    controllers = env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")
    controller_ports = {listeners[name][1] for name in controllers}
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    node, _, address = voters[0].partition("@")
    assert (len(voters), node) == (1, env["KAFKA_NODE_ID"])
    voter_host, voter_port = host_port(address)
    assert voter_host in kafka_network_names(compose) and voter_port in controller_ports
    assert env.get("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT") in set(listeners) - set(controllers)
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"].lower() == "false"


def test_kafka_and_redis_keep_their_data_on_named_volumes(compose: dict[str, Any]) -> None:
    """Kafka's log dirs and Redis' AOF directory are on named volumes, and Redis has AOF on."""
    kafka = service(compose, KAFKA)
    for directory in environment(kafka)["KAFKA_LOG_DIRS"].split(","):
        mount = covering_mount(compose, kafka, directory)
        assert mount is not None and mount.kind == "volume", f"kafka log dir {directory} is not persisted"
    redis = service(compose, REDIS)
    words = argv(redis.get("command"))
    assert option(words, "--appendonly") == ["yes"], "Redis without AOF loses profiles on restart"
    directory = (option(words, "--dir") or ["/data"])[-1]  # the official image's workdir
    mount = covering_mount(compose, redis, directory)
    assert mount is not None and mount.kind == "volume", f"redis dir {directory} is not persisted"


def test_host_ports_are_loopback_and_kafka_advertises_its_host_port(compose: dict[str, Any]) -> None:
    """Published ports bind 127.0.0.1, and Kafka's host listener advertises the host side of its mapping."""
    for name, svc in compose["services"].items():
        for host_ip, _, _ in published_ports(svc):
            assert host_ip == "127.0.0.1", f"{name} publishes on {host_ip or 'every interface'}"
    env = environment(service(compose, KAFKA))
    listeners = kafka_listeners(env, "KAFKA_LISTENERS")
    advertised = kafka_listeners(env, "KAFKA_ADVERTISED_LISTENERS")
    ports = published_ports(service(compose, KAFKA))
    assert ports, "kafka is not reachable from the host"
    for _, published, target in ports:
        (name,) = [n for n, (_, p) in listeners.items() if p == target]
        assert advertised.get(name) in (("localhost", published), ("127.0.0.1", published)), (
            f"host clients bootstrap on :{published} but are told {advertised.get(name)}")


def test_replay_sends_the_generated_log_to_the_worker_input(
    compose: dict[str, Any], worker_config: Config,
) -> None:
    """The opt-in replay job, on the worker's image, sends the log it generates to a worker input topic."""
    svc = service(compose, REPLAY)
    worker = service(compose, WORKER)
    assert svc.get("profiles") and "replay" in svc["profiles"]
    assert (svc.get("image"), build_of(svc)) == (worker.get("image"), build_of(worker))
    commands = script_commands(svc)
    (generate,) = [w for w in commands if w[:2] == ["segstream", "generate"]]
    (replay,) = [w for w in commands if w[:2] == ["segstream", "replay"]]
    assert commands.index(generate) < commands.index(replay)
    (out,) = option(generate, "--out")
    assert replay[2] == out, "replay does not send the file generate wrote"
    assert option(replay, "--topic")[0] in worker_config.input_topics
    brokers = option(replay, "--brokers")[0].split(",")
    assert set(brokers) == set(worker_config.brokers)
    assert_in_network_kafka(compose, brokers, REPLAY)
    assert svc["depends_on"][TOPIC_JOB]["condition"] == "service_completed_successfully"
    mount = covering_mount(compose, svc, out)
    assert mount is not None and not mount.read_only, f"{out} is not on a writable mount"


def test_grafana_datasource_is_the_prometheus_service(compose: dict[str, Any]) -> None:
    """Grafana's Prometheus datasource is the prometheus service and port, no finer than its scrapes."""
    sources = [d for doc in grafana_provisioning(compose, "datasources") for d in doc["datasources"]
               if d["type"] == "prometheus"]
    assert len(sources) == 1
    url = urlsplit(sources[0]["url"])
    listen = option(argv(service(compose, PROMETHEUS).get("command")), "--web.listen-address")
    assert url.hostname == PROMETHEUS
    assert url.port == host_port(listen[-1] if listen else ":9090")[1]
    interval = prometheus_config(compose).get("global", {}).get("scrape_interval", "1m")
    assert duration_s(sources[0].get("jsonData", {}).get("timeInterval", interval)) >= duration_s(interval)


def exported_series() -> set[str]:
    """Sample names of the metrics segstream.metrics defines."""
    suffixes = {"counter": ["_total", "_created"], "gauge": [""],
                "histogram": ["_bucket", "_count", "_sum", "_created"],
                "summary": ["", "_count", "_sum", "_created"]}
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names |= {family.name + s for s in suffixes.get(family.type, [""])}
    return names


def test_dashboards_query_what_the_worker_exports(compose: dict[str, Any]) -> None:
    """Dashboards use the provisioned datasource, real scrape jobs and only metrics segstream exports."""
    svc = service(compose, GRAFANA)
    uids = {d.get("uid") for doc in grafana_provisioning(compose, "datasources") for d in doc["datasources"]}
    jobs = {job["job_name"] for job in prometheus_config(compose)["scrape_configs"]}
    series = exported_series()
    dashboards = []
    for doc in grafana_provisioning(compose, "dashboards"):
        for provider in doc["providers"]:
            directory = host_path(compose, svc, provider["options"]["path"])
            assert directory is not None and directory.is_dir(), provider["options"]["path"]
            dashboards += sorted(directory.glob("*.json"))
    assert dashboards
    for file in dashboards:
        panels = json.loads(file.read_text(encoding="utf-8"))["panels"]
        for target in (t for panel in panels for t in panel.get("targets", [])):
            expr = target["expr"]
            assert target.get("datasource", {}).get("uid") in uids, f"{file.name}: {expr}"
            unknown = set(re.findall(r"\bsegstream_\w+", expr)) - series
            assert not unknown, f"{file.name}: {expr} queries {unknown}, which the worker does not export"
            assert set(re.findall(r'job="([^"]+)"', expr)) <= jobs, f"{file.name}: {expr}"


# --- every `segstream run` of a stack: one worker, or shards ---------------------------------


def topic_jobs(compose: dict[str, Any]) -> list[str]:
    """The one-shot services that create topics with ``kafka-topics.sh --create``."""
    return [name for name, svc in compose["services"].items()
            if (argv(svc.get("entrypoint")) + argv(svc.get("command")))[:2] == ["/bin/sh", "-c"]
            and created_topics(compose, name)]


def test_every_shard_runs_exactly_once(compose: dict[str, Any]) -> None:
    """The `segstream run` services are shards 0..N-1 of one N (one worker: N = 1), not a cluster."""
    configs = run_services(compose)
    assert WORKER in configs
    (shards,) = {config.shards for config in configs.values()}
    assert sorted(config.shard for config in configs.values()) == list(range(shards))
    for name in configs:
        words = argv(service(compose, name).get("command"))
        assert not option(words, "-a") and not option(words, "--addresses"), (
            f"{name}: a shard is a process on its own (`run` refuses --addresses with shards)")


def test_shards_differ_only_in_their_shard(compose: dict[str, Any]) -> None:
    """Same image, config file, endpoints and topics for every shard; only `shard` differs."""
    configs = run_services(compose)
    first = configs[WORKER].replace(shard=0)
    assert all(config.replace(shard=0) == first for config in configs.values())
    assert len({service(compose, name)["image"] for name in configs}) == 1
    assert len({worker_config_path(compose, name) for name in configs}) == 1


def test_each_shard_is_scraped_and_health_checked_on_its_own_port(compose: dict[str, Any]) -> None:
    """Shard i serves metrics on metrics_port + i: exposed, scraped by Prometheus and health-checked there."""
    targets = {host_port(target) for job in prometheus_config(compose)["scrape_configs"]
               for static in job.get("static_configs") or [] for target in static["targets"]}
    for name, config in run_services(compose).items():
        port = config.metrics_port + config.shard
        svc = service(compose, name)
        assert port in container_ports(svc), f"{name} does not expose its metrics port {port}"
        assert (name, port) in targets, f"Prometheus does not scrape {name}:{port}"
        assert f"127.0.0.1:{port}/healthz" in " ".join(argv(svc["healthcheck"]["test"])), name


def test_each_shard_keeps_its_recovery_on_a_volume_of_its_own(compose: dict[str, Any]) -> None:
    """A recovery directory records its shard: two shards on one volume would refuse to start."""
    volumes = []
    for name, config in run_services(compose).items():
        mount = covering_mount(compose, service(compose, name), config.recovery_dir)
        assert mount is not None and mount.kind == "volume" and not mount.read_only, name
        volumes.append(mount.source)
    assert len(set(volumes)) == len(volumes), f"shards share a recovery volume: {volumes}"


def test_shards_start_after_every_topic_they_use_is_created(compose: dict[str, Any]) -> None:
    """Each shard waits for the jobs that create its topics; the input splits evenly enough for N shards."""
    jobs = topic_jobs(compose)
    created = {topic: (job, words) for job in jobs for topic, words in created_topics(compose, job).items()}
    for name, config in run_services(compose).items():
        used = {*config.input_topics, config.output_topic, config.dlq_topic, config.model_events_topic}
        if config.shards > 1:
            used.add(config.model_learn_topic)
        assert used <= set(created), f"{name} uses topics nobody creates: {used - set(created)}"
        depends = service(compose, name)["depends_on"]
        for job in {created[topic][0] for topic in used}:
            assert depends[job]["condition"] == "service_completed_successfully", (name, job)
        partitions = {int(option(created[topic][1], "--partitions")[0]) for topic in config.input_topics}
        assert len(partitions) == 1 and min(partitions) >= config.shards, (
            f"{name}: input partitions {partitions} cannot be split between {config.shards} shards")
