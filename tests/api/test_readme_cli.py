"""The README's CLI walkthrough, run verbatim against a real ``upload-plane dev``.

The block after ``<!-- cli-walkthrough -->`` is run with bash as a reader would run it, with this
environment's ``upload-plane`` first on PATH and the reader's config and state directories in a
temporary home, so the stored token and resume state stay out of the real ones.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.api.test_readme_walkthrough import ADMIN_PASSWORD, README, dev_server  # noqa: F401 (fixture)

MARKER = "<!-- cli-walkthrough -->"
SUCCESS_LINE = "CLI WALKTHROUGH OK"


def cli_block(readme: str) -> str:
    match = re.search(re.escape(MARKER) + r"\n```bash\n(.*?)\n```", readme, re.DOTALL)
    assert match is not None, f"README.md has no ```bash block directly after {MARKER!r}"
    return match.group(1)


def test_readme_cli_walkthrough_runs_verbatim(dev_server: str, tmp_path: Path) -> None:  # noqa: F811
    script = cli_block(README.read_text())
    assert "upload-plane login" in script and SUCCESS_LINE in script
    bash = shutil.which("bash")
    assert bash is not None
    bindir = Path(sys.executable).parent
    assert (bindir / "upload-plane").exists(), "the upload-plane console script is not installed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPLOAD_PLANE_")}
    env.update(
        API=dev_server,
        PASS=ADMIN_PASSWORD,
        PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}",
        HOME=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_STATE_HOME=str(tmp_path / "state"),
    )
    result = subprocess.run(
        [bash, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    output = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 0, f"the CLI walkthrough failed with {result.returncode}\n{output}"
    assert SUCCESS_LINE in result.stdout, output
    assert "interrupted (exit 124)" in result.stdout, output
    assert "Traceback" not in result.stderr, output
    credentials = tmp_path / "config" / "upload-plane" / "credentials.json"
    assert credentials.exists() and '"logins": {}' in credentials.read_text().replace("\n", "")
