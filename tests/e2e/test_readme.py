"""The README works typed literally: every shell block, in order, in a scratch folder, as a user runs it.

What differs from a user's machine, and why:

* the clone: the README's URL is replaced by a git repository made from this working tree (the test must
  check the code as it is, not what is published);
* the install: the fresh virtual environment also sees this environment's site-packages, so
  ``pip install -e ".[all,dev]"`` resolves every dependency locally and installs only beeaudio itself
  (downloading 2.4 GB again would take most of CI's time). ``.ci/run`` runs the same commands on a clean
  machine, and this test checks that it does;
* ``pytest`` (the README's test command) is what ``.ci/run`` runs; running it here would run this test
  inside itself;
* port 8000 is replaced by a free port, ``HOME`` is a scratch folder, and the "second terminal" and "on the
  Pi" steps run in the same script (the server in the background, the Pi in its own folder with the copied
  wheel and model, as the README says to copy them).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sysconfig
from pathlib import Path

import pytest

from beeaudio.collector.launch import free_port
from tests.conftest import REPO_ROOT
from tests.fixtures.readme import Block, shell_blocks

pytestmark = pytest.mark.slow

README = REPO_ROOT / "README.md"
CLONE_URL = "https://github.com/beeaudio/beeaudio.git"


def _source_repository(target: Path) -> Path:
    """A git repository holding this working tree's files (tracked and untracked, not ignored)."""
    listing = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    target.mkdir(parents=True)
    for name in filter(None, listing):
        source = REPO_ROOT / name.decode()
        if source.is_file():
            destination = target / name.decode()
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(source.read_bytes())
            destination.chmod(source.stat().st_mode)
    git = ["git", "-c", "user.name=readme-test", "-c", "user.email=readme@test", "-C", str(target)]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "working tree"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    return target


def _script(blocks: list[Block], *, source: Path, port: int, scratch: Path) -> str:
    site = sysconfig.get_paths()["purelib"]
    lines = [
        "set -euo pipefail",
        f"cd {shlex.quote(str(scratch))}",
        'trap \'[ -n "${SERVE_PID:-}" ] && kill "$SERVE_PID" 2>/dev/null || true\' EXIT',
    ]
    for block in blocks:
        text = block.text.replace("localhost:8000", f"localhost:{port}").replace(
            "--port 8000", f"--port {port}"
        )
        lines.append(f"echo '>>> README line {block.line} ({block.kind})'")
        if block.kind == "clone":
            assert CLONE_URL in text, "the README's clone line changed: update CLONE_URL"
            lines.append(text.replace(CLONE_URL, shlex.quote(str(source))))
        elif block.kind == "install":
            # The scratch environment sees this one's packages (see the module docstring).
            lines.append(
                "python -c \"import sysconfig, sys; open(sysconfig.get_paths()['purelib'] + "
                f"'/zz-test-deps.pth', 'w').write(sys.argv[1] + '\\\\n')\" {shlex.quote(site)}"
            )
            lines.append(text)
        elif block.kind == "ci":
            continue  # .ci/run runs it; test_ci_runs_the_readme_install_and_test_commands checks that
        elif block.kind == "background":
            lines.append(f"( {text} ) > serve.log 2>&1 &")
            lines.append("SERVE_PID=$!")
            lines.append(
                f"for i in $(seq 1 240); do curl -sf http://localhost:{port}/api/v1/health >/dev/null "
                "&& break; kill -0 $SERVE_PID || { cat serve.log; exit 1; }; sleep 0.25; done"
            )
            # The second terminal repeats the exports; this shell had them from the server's block too.
            lines.append(
                'export BEEAUDIO_DATABASE_URL="sqlite:///$PWD/hives.db"'
                " BEEAUDIO_ADMIN_TOKEN=$(cat admin.token)"
            )
        elif block.kind == "edge-install":
            # "copy the wheel and your .beemodel to the Pi": a folder of its own, with its own HOME.
            lines.append("mkdir -p ../pi/home && cp dist/beeaudio_edge-*.whl models/hive-dnn.beemodel ../pi/")
            lines.append(f"( cd ../pi && export HOME=$PWD/home && deactivate 2>/dev/null || true\n{text}\n)")
        else:
            lines.append(text)
    return "\n".join(lines) + "\n"


def test_readme_runs_as_typed(tmp_path: Path) -> None:
    blocks = shell_blocks(README)
    kinds = [b.kind for b in blocks]
    assert kinds.count("clone") == 1 and kinds.count("install") == 1 and "background" in kinds
    scratch = tmp_path / "user"
    (scratch / "home").mkdir(parents=True)
    source = _source_repository(tmp_path / "published" / "beeaudio")  # git clone names the folder after it
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BEEAUDIO_", "VIRTUAL_ENV", "PYTHON"))
    }
    env.update(
        HOME=str(scratch / "home"),
        # Downloads (the Pi's ai-edge-litert, pip's build backend) come from the real cache when there is one.
        PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")),
        PATH=os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p),
    )
    script = _script(blocks, source=source, port=port, scratch=scratch)
    (tmp_path / "readme.sh").write_text(script)
    result = subprocess.run(
        ["bash", str(tmp_path / "readme.sh")], env=env, capture_output=True, text=True, timeout=1500
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, f"the README failed (script {tmp_path / 'readme.sh'}):\n{out[-6000:]}"
    # What a user should see at the end of each part.
    assert "events reached the collector" in out  # beeaudio demo
    assert "test accuracy (held-out hives" in out  # beeaudio train
    assert "outbox_depth" in out and '"state":' in out  # device status, hive status
    assert "dashboard: http://localhost:" in out
    assert "checksum and self-test passed" in out  # the Pi's selftest


def test_ci_runs_the_readme_install_and_test_commands() -> None:
    """The README's install and test commands are the ones .ci/run runs on a clean clone."""
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    for block in shell_blocks(README):
        if block.kind in ("install", "ci"):
            for command in filter(None, (line.strip() for line in block.text.splitlines())):
                assert command in ci or command.replace("pip install", "python -m pip install -q") in ci, (
                    f".ci/run does not run the README's {command!r}"
                )


def test_every_shell_block_of_the_readme_is_run() -> None:
    known = {"run", "clone", "install", "ci", "background", "edge-wheel", "edge-install"}
    assert {b.kind for b in shell_blocks(README)} <= known, "a README block kind the test does not run"
