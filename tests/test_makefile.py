"""The Makefile's environment target, run with stand-in interpreters (nothing is installed)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE = """#!/bin/sh
# a stand-in interpreter reporting Python {version}: `-m venv DIR` makes DIR/bin/{{python,uv}} that do nothing
case "$*" in *version_info*) [ "{version}" = "3.11" ] && exit 0 || exit 1;; --version) echo "Python {version}"; exit 0;; esac
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin"; for b in python uv; do printf '#!/bin/sh\\nexit 0\\n' > "$3/bin/$b"; chmod +x "$3/bin/$b"; done
fi
exit 0
"""

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _make_venv(tmp_path, version):
    py = tmp_path / f"python{version}"
    py.write_text(FAKE.format(version=version))
    py.chmod(0o755)
    venv = tmp_path / "venv"
    r = subprocess.run(["make", "-s", "-C", str(ROOT), "venv", f"PYTHON={py}", f"VENV={venv}"],
                       capture_output=True, text=True, timeout=60)
    return r, venv


def test_venv_needs_python_3_11_and_says_so(tmp_path):
    r, venv = _make_venv(tmp_path, "3.10")
    assert r.returncode != 0
    assert "xcal needs Python 3.11" in r.stdout and "found: Python 3.10" in r.stdout
    assert "make PYTHON=/path/to/python3.11" in r.stdout
    assert not (venv / "bin").exists()  # stopped before creating anything


def test_venv_records_how_long_the_install_took(tmp_path):
    r, venv = _make_venv(tmp_path, "3.11")
    assert r.returncode == 0, r.stdout + r.stderr
    assert int((venv / ".xcal-install-seconds").read_text()) >= 0  # read by make run's record (make_run.json)
    assert list(venv.glob(".xcal-pins-*"))  # the stamp: the next make reuses the environment
