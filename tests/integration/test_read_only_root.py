"""`gepa-sidecar run` as the image runs it in a pod: UID/GID 10001, the root filesystem read-only,
writable only /tmp (HOME, TMPDIR), the data dir and the prompts dir (the pod's emptyDirs).

We run as root here, where a chmod does not bind; so the child gets a private mount namespace
(`unshare --mount`) in which `/` is remounted read-only and only the three directories are bound
writable, and `setpriv` then drops it to 10001 as the image's `USER` does. It keeps one
capability, CAP_DAC_READ_SEARCH (read any file): this machine's interpreter lives under root's
0700 home, where the image's is world-readable; writes are checked as 10001's. Nothing outside
the namespace changes. The prompts config is the example ConfigMap's (deploy/k8s/configmap.yaml).
"""

from __future__ import annotations

import json
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sidecar.events import PromptDocument
from tests.conftest import Topics
from tests.helpers import encode, make_event, produce, scaled, wait_until
from tests.llm_server import LlmServer
from tests.processes import SERVING, Sidecar, sidecar_env

CONFIGMAP = Path(__file__).parents[2] / "deploy" / "k8s" / "configmap.yaml"
NAME = "customer-care"
IMAGE_USER = 10001  # deploy/Dockerfile's USER and the manifests' runAsUser
CHATBOT_USER = 10002  # another container of the pod, reading the shared prompts dir
WRITABLE = ("tmp", "data", "prompts")
REFUSED = (b"Read-only file system", b"Permission denied")
OK = {"outcome": "ok"}


REPO = Path(__file__).parents[2]


def reachable_checkout(stash: Path) -> list[str]:
    """Mounts that let `user` reach this checkout when a directory above it is root's alone (a
    clone under `mktemp -d`, mode 0700), as the image's /opt/gepa-sidecar is: inside the
    namespace only, that directory is covered by a world-traversable tmpfs and the checkout is
    bound back in place through `stash`. (CAP_DAC_READ_SEARCH lets the child open such files,
    but not pass `access()`, which alembic asks of its scripts.)"""
    closed = next(
        (a for a in reversed(REPO.parents) if a != Path("/") and not a.stat().st_mode & 0o001),
        None,
    )
    if closed is None or Path(sys.base_prefix).is_relative_to(closed):
        return []
    repo, stash_q, closed_q = (shlex.quote(str(p)) for p in (REPO, stash, closed))
    return [
        f"mount --bind {repo} {stash_q}",
        f"mount -t tmpfs -o mode=0755 tmpfs {closed_q}",
        f"mkdir -p {repo}",
        f"mount --bind {stash_q} {repo}",
    ]


def sandboxed(command: list[str], writable: list[Path], user: int) -> list[str]:
    """`command` in a mount namespace where only `writable` can be written, run as `user`."""
    stash = writable[0].parent / "checkout"
    stash.mkdir(exist_ok=True)
    binds = reachable_checkout(stash)
    binds += [f"mount --bind {shlex.quote(str(p))} {shlex.quote(str(p))}" for p in writable]
    reads = "--inh-caps=+dac_read_search --ambient-caps=+dac_read_search"
    drop = f"exec setpriv --reuid={user} --regid={user} --clear-groups {reads} --"
    script = " && ".join([*binds, "mount -o remount,bind,ro /", f'{drop} "$@"'])
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
        "sh",
        *command,
    ]


def sandbox_refusal() -> str | None:
    """Why this machine cannot sandbox the child (None: it can)."""
    if shutil.which("unshare") is None or shutil.which("setpriv") is None:
        return "needs util-linux's unshare and setpriv"
    trial = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "true"],
        capture_output=True,
        timeout=scaled(10),
    )
    if trial.returncode != 0:
        return f"cannot make a mount namespace (root needed): {trial.stderr.decode().strip()}"
    return None


@pytest.fixture
def pod_dirs() -> Iterator[Path]:
    """A root the image's user can reach (pytest's tmp_path is root's alone): the emptyDirs as
    Kubernetes makes them (mode 0777), the mounted config, and an empty working directory."""
    refusal = sandbox_refusal()
    if refusal is not None:
        pytest.skip(refusal)
    with tempfile.TemporaryDirectory(prefix="gepa-read-only-") as name:
        base = Path(name)
        base.chmod(0o755)
        for writable in WRITABLE:
            (base / writable).mkdir(mode=0o777)
            (base / writable).chmod(0o777)
        (base / "config").mkdir()
        (base / "work").mkdir()
        (base / "work").chmod(0o555)
        configmap = next(yaml.safe_load_all(CONFIGMAP.read_text(encoding="utf-8")))
        (base / "config" / "config.yaml").write_text(configmap["data"]["config.yaml"])
        yield base


def test_the_sandbox_refuses_writes_outside_the_writable_dirs(pod_dirs: Path) -> None:
    """Guards the test below against passing vacuously: the namespace really is read-only."""
    probe = "touch ../tmp/ok && touch ../data/ok && touch here"
    result = subprocess.run(
        sandboxed(["sh", "-c", probe], [pod_dirs / d for d in WRITABLE], IMAGE_USER),
        cwd=pod_dirs / "work",
        capture_output=True,
        timeout=scaled(30),
    )
    assert result.returncode != 0
    assert b"Read-only file system" in result.stderr
    assert (pod_dirs / "tmp" / "ok").stat().st_uid == IMAGE_USER
    assert (pod_dirs / "data" / "ok").exists()
    assert not (pod_dirs / "work" / "here").exists()


def judged_ok(sidecar: Sidecar) -> float:
    page = httpx.get(f"{sidecar.base_url}/metrics", timeout=scaled(10)).text
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == "gepa_sidecar_judge_requests_total" and sample.labels == OK:
                return sample.value
    return 0.0


def ready(sidecar: Sidecar) -> bool:
    if SERVING.search(sidecar.log.read_bytes()) is None:
        return False
    try:
        return httpx.get(f"{sidecar.base_url}/readyz", timeout=scaled(10)).status_code == 200
    except httpx.TransportError:  # logged as serving a moment before it accepts
        return False


def test_run_serves_publishes_and_judges_with_a_read_only_root_as_uid_10001(
    pod_dirs: Path,
    kafka_bootstrap: str,
    topics: Topics,
    llm_server: LlmServer,
    tmp_path: Path,
) -> None:
    writable = {name: pod_dirs / name for name in WRITABLE}
    env = sidecar_env(kafka_bootstrap, topics, f"sqlite:///{writable['data'] / 'sidecar.db'}")
    env.update(
        HOME=str(writable["tmp"]),
        TMPDIR=str(writable["tmp"]),
        PYTHONDONTWRITEBYTECODE="1",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        SIDECAR_CONFIG_FILE=str(pod_dirs / "config" / "config.yaml"),
        SIDECAR_PUBLISH_DIR=str(writable["prompts"]),
        SIDECAR_PUBLISH_TARGETS="file,http",
        SIDECAR_KAFKA_AUTO_OFFSET_RESET="earliest",
        SIDECAR_JUDGE_MODEL="openai/local",
        SIDECAR_JUDGE_API_BASE=llm_server.api_base,
        SIDECAR_JUDGE_API_KEY="unused",
    )
    entrypoint = str(Path(sys.executable).with_name("gepa-sidecar"))
    log_path = tmp_path / "sidecar.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            sandboxed([entrypoint, "run"], list(writable.values()), IMAGE_USER),
            env=env,
            cwd=pod_dirs / "work",
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        sidecar = Sidecar(process, log_path)
        try:
            wait_until(lambda: process.poll() is not None or ready(sidecar), 60, "/readyz 200")
            assert process.poll() is None, log_path.read_text()

            published = writable["prompts"] / f"{NAME}.json"
            document = PromptDocument.model_validate_json(published.read_bytes())
            assert (document.version, published.stat().st_uid) == (1, IMAGE_USER)
            as_chatbot = subprocess.run(
                [
                    "setpriv",
                    f"--reuid={CHATBOT_USER}",
                    f"--regid={CHATBOT_USER}",
                    "--clear-groups",
                    "cat",
                    str(published),
                ],
                capture_output=True,
                timeout=scaled(10),
            )
            assert json.loads(as_chatbot.stdout)["sha256"] == document.sha256

            events = [encode(make_event(random.Random(seed))) for seed in range(3)]
            produce(kafka_bootstrap, topics.traffic, events)
            wait_until(lambda: judged_ok(sidecar) >= 3, 60, "three events stored and judged")

            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=scaled(30)) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = log_path.read_bytes()
    assert not [word for word in REFUSED if word in output], output.decode()
    assert list((pod_dirs / "work").iterdir()) == []
    assert (writable["data"] / "sidecar.db").stat().st_uid == IMAGE_USER
