"""The image and the compose file, checked statically (no Docker engine runs here): what
they name exists, every command is a real drip command, services start in order."""

from __future__ import annotations

import re
import shlex

import pytest
from ruamel.yaml import YAML
from typer.testing import CliRunner

from drip.cli import app
from tests.fixtures import ROOT

runner = CliRunner()


def _stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (instruction, arguments), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, arguments = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def _is_drip_command(arguments: list[str]) -> bool:
    """``drip ARGUMENTS`` parses: with --help added, it prints help instead of an error."""
    return runner.invoke(app, [*arguments, "--help"]).exit_code == 0


def test_dockerfile_builds_from_what_exists_and_runs_drip_unprivileged() -> None:
    """Two stages; every COPY source exists; pip never keeps a cache; the runtime stage
    runs as a non-root user, checks /healthz, and its entrypoint and default command are
    a real drip command."""
    stages = _stages()
    assert len(stages) == 2
    for stage in stages:
        for instruction, arguments in stage:
            if instruction == "COPY" and not arguments.startswith("--from"):
                *sources, _ = shlex.split(arguments)
                for source in sources:
                    assert (ROOT / source).exists(), source
            if instruction == "RUN" and "pip " in arguments:
                for command in re.findall(r"pip (?:install|wheel)[^&]*", arguments):
                    assert "--no-cache-dir" in command, command
            if instruction == "RUN" and "pip wheel" in arguments:
                # no isolated build environment fetching build tools that are not pinned
                for command in re.findall(r"pip wheel[^&]*", arguments):
                    assert "--no-build-isolation" in command, command
                    assert "--require-hashes" in command or "--no-deps" in command, command
            if instruction == "RUN" and "requirements-build.lock" in arguments:
                assert "--require-hashes" in arguments
    runtime = dict(stages[-1])
    assert runtime["USER"] not in ("root", "0")
    assert runtime["VOLUME"] == '["/data"]' and "/data/" in runtime["ENV"]
    # the wheels are bind-mounted for the install only: no layer of the image keeps them
    assert not any(
        instruction == "COPY" and arguments.startswith("--from")
        for instruction, arguments in stages[-1]
    )
    assert "--mount=type=bind,from=build" in runtime["RUN"]
    for stage in stages:
        image = dict(stage)["FROM"].split()[0]
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", image), image
    assert "/healthz" in runtime["HEALTHCHECK"]
    assert runtime["ENTRYPOINT"] == '["drip"]'
    default = re.findall(r'"([^"]+)"', runtime["CMD"])
    assert _is_drip_command(default), default
    assert not any(
        "gcc" in arguments or "build-essential" in arguments for _, arguments in stages[-1]
    )


def test_mutation_testing_copies_every_file_the_tests_look_for() -> None:
    """`make mutate` runs the tests in a copy of the project (mutmut's ``also_copy``),
    where the image's test looks for each file the Dockerfile copies and the docs' test
    for each file the README links to: one missing there fails every mutant's run
    before it starts."""
    import tomllib

    mutmut = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    copied = {kept.rstrip("/") for kept in [*mutmut["also_copy"], *mutmut["source_paths"]]}
    copied |= {"pyproject.toml", "tests"}
    wanted = re.findall(r"\]\(([^)#:]+?)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    for stage in _stages():
        for instruction, arguments in stage:
            if instruction == "COPY" and not arguments.startswith("--from"):
                wanted += shlex.split(arguments)[:-1]
    assert "CHANGELOG.md" in wanted and "requirements.lock" in wanted
    for path in wanted:
        assert path.split("/")[0] in copied, path


def _pinned(name: str) -> list[str]:
    """The packages a lock file pins, each to one version with a sha256 hash."""
    lock = (ROOT / name).read_text()
    pinned = re.findall(r"^([A-Za-z0-9_.-]+)==\S+ \\$", lock, re.M)
    hashed = re.findall(r"^([A-Za-z0-9_.-]+)==\S+ \\\n +--hash=sha256:[0-9a-f]{64}", lock, re.M)
    assert pinned and hashed == pinned
    return pinned


def test_lock_file_pins_every_dependency_with_hashes() -> None:
    """requirements.lock pins each package to one version with sha256 hashes, and holds
    every direct dependency of pyproject.toml; requirements-build.lock pins what builds
    them (drip's build backend, and setuptools for sdist-only packages) the same way."""
    import tomllib

    pinned = _pinned("requirements.lock")
    backend = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    building = set(_pinned("requirements-build.lock"))
    assert {"setuptools", "wheel"} <= building
    for requirement in backend:
        assert re.match(r"[A-Za-z0-9_.-]+", requirement).group(0) in building  # type: ignore[union-attr]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    normalise = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    locked = set(map(normalise, pinned))
    for requirement in project["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)  # type: ignore[union-attr]
        assert normalise(name) in locked, name


def _compose() -> dict:  # type: ignore[type-arg]
    return YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text())


def test_compose_starts_web_and_scheduler_after_a_successful_migration() -> None:
    """A one-shot migrate service runs `drip db upgrade` once PostgreSQL is healthy; web and
    scheduler wait for it to complete successfully, restart unless stopped, and web has a
    healthcheck; secrets come from .env, never the file itself."""
    services = _compose()["services"]
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("web", "scheduler"):
        service = services[name]
        assert service["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"}
        }, name
        assert service["restart"] == "unless-stopped"
        assert service["env_file"] == ".env"
        assert _is_drip_command(service["command"]), service["command"]
    assert "/healthz" in " ".join(services["web"]["healthcheck"]["test"])
    assert "healthcheck" in services["postgres"]
    # drip run and db upgrade serve no HTTP: the image's /healthz check is turned off
    for name in ("migrate", "scheduler"):
        assert services[name]["healthcheck"] == {"disable": True}, name
    text = (ROOT / "docker-compose.yml").read_text()
    # the key comes from .env, and an empty or missing one stops `up` before anything starts
    [key] = re.findall(r"DRIP_SECRET_KEY: (.*)", text)
    assert key.startswith("${DRIP_SECRET_KEY:?"), key


def test_compose_publishes_on_loopback_builds_once_and_pins_its_images() -> None:
    """Every published port is bound to 127.0.0.1 (Mailpit's page shows every email without
    a login); one service builds the image, the others use it; every other image names a
    version."""
    services = _compose()["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    assert [name for name, service in services.items() if "build" in service] == ["migrate"]
    for name, service in services.items():
        image = service["image"]
        if "build" not in service and image != "drip:local":
            tag = image.rpartition(":")[2]
            assert ":" in image and tag != "latest" and re.search(r"\d", tag), (name, image)


@pytest.mark.parametrize("kept_out", [".env", "*.db", "drip-secret.key", ".venv", "mutants"])
def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image(kept_out: str) -> None:
    """The build context never carries the .env file, a database or the key file."""
    assert kept_out in (ROOT / ".dockerignore").read_text().split()
