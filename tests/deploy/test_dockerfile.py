"""deploy/Dockerfile, read as Docker reads it (no engine runs here to build it): two stages from
one base, the lock file installed with the Makefile's uv and no dev tools or local model, a
numeric non-root user, exec-form entrypoint, and writable paths that the pod mounts as emptyDirs.
That the image's settings really run with a read-only root as UID 10001 is
tests/integration/test_read_only_root.py."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sidecar.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DEPLOYMENT = ROOT / "deploy" / "k8s" / "chatbot-deployment.yaml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SYNC_FLAGS = {"--frozen", "--no-dev", "--no-editable", "--compile-bytecode"}
ALSO_AT_RUNTIME = {"httpx"}  # a dev dependency that litellm and openai need anyway
IMAGE_USER = "10001:10001"


@dataclass
class Stage:
    """One FROM and what follows it; `image` with the global ARG defaults filled in."""

    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [value for kind, value in self.instructions if kind == keyword]


def logical_lines(text: str) -> list[str]:
    """Instructions with their `\\` continuations joined; comments and blank lines dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return lines


def parse(text: str) -> list[Stage]:
    arguments: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword == "FROM":
            words = value.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: arguments[m[1]], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image, name))
        elif not stages and keyword == "ARG":
            name, _, default = value.partition("=")
            arguments[name] = default
        else:
            stages[-1].instructions.append((keyword, value))
    return stages


def pairs(values: list[str]) -> dict[str, str]:
    """ENV/LABEL/ARG `key=value` words (quotes removed) of a stage, in one mapping."""
    found: dict[str, str] = {}
    for value in values:
        for word in shlex.split(value):
            key, _, item = word.partition("=")
            found[key] = item
    return found


STAGES = parse(DOCKERFILE.read_text(encoding="utf-8"))
BUILDER = next(stage for stage in STAGES if stage.name == "builder")
FINAL = STAGES[-1]
FINAL_ENV = pairs(FINAL.values("ENV"))


def sync_commands() -> list[list[str]]:
    commands = [shlex.split(run) for run in BUILDER.values("RUN") if "uv sync" in run]
    return [words[words.index("uv") :] for words in commands]


def test_two_stages_from_one_pinned_python_base_and_the_makefiles_uv() -> None:
    """The virtualenv's interpreter is a link to the base's python: both stages share it."""
    assert FINAL.name == "runtime" and FINAL is not BUILDER
    assert FINAL.image == BUILDER.image
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", FINAL.image), FINAL.image
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    uv_version = re.search(r"^UV_VERSION := (\S+)$", makefile, re.MULTILINE)
    assert uv_version is not None
    assert [stage.image for stage in STAGES if "astral-sh/uv" in stage.image] == [
        f"ghcr.io/astral-sh/uv:{uv_version[1]}"
    ]
    assert ">=3.11" in PYPROJECT["project"]["requires-python"]


def test_the_builder_installs_the_lock_file_without_dev_tools_or_extras() -> None:
    copied = " ".join(BUILDER.values("COPY")).split()
    assert "uv.lock" in copied and "pyproject.toml" in copied
    commands = sync_commands()
    assert commands, "no uv sync in the builder"
    for command in commands:
        assert set(command) >= SYNC_FLAGS, command
        assert not [word for word in command if word.startswith(("--extra", "--all-", "--group"))]
    assert "--no-install-project" not in commands[-1]  # the last one installs the package


def test_the_locked_set_the_builder_installs_has_no_local_model_docker_or_dev_tools(
    tmp_path: Path,
) -> None:
    """`uv export` with the builder's flags lists exactly what `uv sync` installs from the lock."""
    uv = ROOT / ".tools" / "bin" / "uv"
    assert uv.exists(), "run `make install` first (it installs uv at the Makefile's version)"
    flags = [word for word in sync_commands()[-1][2:] if word != "--compile-bytecode"]
    exported = subprocess.run(
        [str(uv), "export", *flags, "--no-hashes", "--format", "requirements-txt"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {
        re.split(r"[=<>; ]", line, maxsplit=1)[0].lower()
        for line in exported.splitlines()
        if line and not line.startswith((" ", "#", "."))
    }
    extras = PYPROJECT["project"]["optional-dependencies"]
    unwanted = {
        re.split(r"[=<>\[ ]", requirement, maxsplit=1)[0].lower()
        for requirement in [
            *extras["local"],
            *extras["docker"],
            *PYPROJECT["dependency-groups"]["dev"],
        ]
    }
    assert {"litellm", "fastapi", "psycopg-binary"} <= installed
    assert installed & unwanted == ALSO_AT_RUNTIME


def test_the_final_stage_holds_only_the_virtualenv_and_runs_as_a_numeric_non_root_user() -> None:
    copies = FINAL.values("COPY")
    assert copies == ["--from=builder /opt/gepa-sidecar /opt/gepa-sidecar"]
    assert FINAL.values("USER") == [IMAGE_USER]
    assert FINAL_ENV["PATH"].startswith("/opt/gepa-sidecar/bin:")


def test_entrypoint_and_command_are_exec_form_and_the_port_is_the_settings_default() -> None:
    """Exec form: no shell in between, so the sidecar itself gets the kubelet's SIGTERM."""
    assert [json.loads(value) for value in FINAL.values("ENTRYPOINT")] == [["gepa-sidecar"]]
    assert [json.loads(value) for value in FINAL.values("CMD")] == [["run"]]
    default_port = Settings.model_fields["http_port"].default
    assert FINAL.values("EXPOSE") == [str(default_port)] == [FINAL_ENV["SIDECAR_HTTP_PORT"]]


def test_environment_keeps_writes_off_the_root_and_litellm_offline() -> None:
    assert FINAL_ENV["HOME"] == "/tmp"
    assert FINAL_ENV["PYTHONDONTWRITEBYTECODE"] == "1"
    assert FINAL_ENV["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    settings = [name for name in FINAL_ENV if name.startswith(ENV_PREFIX)]
    assert settings, "the image sets no SIDECAR_ defaults"
    for name in settings:
        assert name.removeprefix(ENV_PREFIX).lower() in Settings.model_fields, name


def test_every_path_the_image_writes_is_an_emptydir_of_the_example_pod() -> None:
    database = FINAL_ENV["SIDECAR_DATABASE_URL"]
    assert database.startswith("sqlite:////")
    writes = {
        FINAL_ENV["HOME"],
        str(Path(database.removeprefix("sqlite:///")).parent),
        FINAL_ENV["SIDECAR_PUBLISH_DIR"],
    }
    pod = yaml.safe_load(DEPLOYMENT.read_text(encoding="utf-8"))["spec"]["template"]["spec"]
    empty_dirs = {volume["name"] for volume in pod["volumes"] if "emptyDir" in volume}
    sidecar = next(c for c in pod["initContainers"] if c["name"] == "gepa-sidecar")
    mounted = {m["mountPath"] for m in sidecar["volumeMounts"] if m["name"] in empty_dirs}
    assert writes <= mounted


def test_labels_name_the_version_and_licence_of_pyproject() -> None:
    labels = pairs(FINAL.values("LABEL"))
    version = pairs(FINAL.values("ARG"))["VERSION"]
    assert version == PYPROJECT["project"]["version"]
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]
    for key in ("title", "description", "source", "base.name"):
        assert labels[f"org.opencontainers.image.{key}"], key


def test_the_build_context_is_an_allowlist_of_what_the_builder_copies() -> None:
    text = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    rules = [line.strip() for line in text.splitlines() if line.strip()[:1] not in ("", "#")]
    assert rules[0] == "*"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert allowed == {"pyproject.toml", "uv.lock", "README.md", "LICENSE", "sidecar"}
    sources = [
        word
        for value in BUILDER.values("COPY")
        if not value.startswith("--from")
        for word in value.split()[:-1]
    ]
    assert set(sources) - {"."} <= allowed
