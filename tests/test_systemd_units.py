"""The systemd units: `systemd-analyze security --offline=true` rates them 2.0 or lower, `systemd-analyze verify`
passes on what `systemd/install.sh` installs, and the install step is idempotent.

The units are checked as installed: install.sh runs into a staging root (--destdir) with --prefix pointing at this
checkout's virtual environment, so the unit's ExecStart names a truesource that exists (verify checks that).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

SYSTEMD = ROOT / "systemd"
MAX_EXPOSURE = 2.0
VENV = Path(sys.prefix)

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None and os.environ.get("CI") != "true",
                                reason="systemd-analyze is not installed (make system-deps installs it)")


def exposure(unit: Path) -> float:
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
                            capture_output=True, text=True, cwd=unit.parent, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@pytest.mark.parametrize("unit", ["truesource.service", "truesource@.service"])
def test_security_rating_is_two_or_lower(unit, tmp_path):
    path = SYSTEMD / unit
    if "@" in unit:  # rated as an instance, the way it runs (systemd-analyze finds the template beside it)
        shutil.copy(path, tmp_path / unit)
        path = tmp_path / "truesource@eth1.service"
    figure = exposure(path)
    print(f"{unit}: exposure {figure}")
    assert figure <= MAX_EXPOSURE


def install(destdir: Path) -> subprocess.CompletedProcess:
    """install.sh into a staging root, the program being this checkout's venv (linked in at its own path)."""
    inside = destdir / str(VENV).lstrip("/")
    if not inside.exists():
        inside.parent.mkdir(parents=True, exist_ok=True)
        inside.symlink_to(VENV)
    return subprocess.run([str(SYSTEMD / "install.sh"), "--destdir", str(destdir), "--prefix", str(VENV),
                           "--no-venv"], capture_output=True, text=True, timeout=120)


def exec_start(unit_text: str) -> list[str]:
    line = next(line for line in unit_text.splitlines() if line.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    result = install(root)
    assert result.returncode == 0, result.stderr
    return root


def test_install_creates_user_directories_config_and_units(installed):
    passwd = (installed / "etc" / "passwd").read_text()
    entry = next(line.split(":") for line in passwd.splitlines() if line.startswith("truesource:"))
    assert entry[6] in ("/usr/sbin/nologin", "/sbin/nologin") and int(entry[2]) != 0
    for directory in ("etc/truesource", "etc/truesource/keys", "etc/truesource/subscribers", "etc/truesource/rules"):
        mode = (installed / directory).stat().st_mode & 0o777
        assert mode == 0o750, (directory, oct(mode))
    config = installed / "etc" / "truesource" / "sensor.toml"
    assert config.read_text() == (SYSTEMD / "sensor.toml").read_text()
    for unit in ("truesource.service", "truesource@.service"):
        text = (installed / "etc" / "systemd" / "system" / unit).read_text()
        assert text == (SYSTEMD / unit).read_text().replace("/opt/truesource", str(VENV))
        assert exec_start(text)[0] == str(VENV / "bin" / "truesource")


def test_install_is_idempotent_and_keeps_the_operators_config(tmp_path):
    installed = tmp_path / "root"
    first = install(installed)
    assert first.returncode == 0, first.stderr
    config = installed / "etc" / "truesource" / "sensor.toml"
    config.write_text(config.read_text().replace('interface = "eth1"', 'interface = "mirror7"'))
    before = (installed / "etc" / "passwd").read_text()
    again = install(installed)
    assert again.returncode == 0, again.stderr
    assert (installed / "etc" / "passwd").read_text() == before  # no second user
    assert 'interface = "mirror7"' in config.read_text()


@pytest.mark.parametrize("unit", ["truesource.service", "truesource@lo.service"])
def test_systemd_analyze_verify_passes(installed, unit):
    units = installed / "etc" / "systemd" / "system"
    result = subprocess.run(["systemd-analyze", "verify", f"./{unit}"], capture_output=True, text=True,
                            cwd=units, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "truesource" not in result.stderr, result.stderr  # no warning about our unit either


def test_units_command_line_and_example_config_are_valid(installed, tmp_path):
    """The installed example validates, and the unit's ExecStart parses against it (with the path rewritten)."""
    config = installed / "etc" / "truesource" / "sensor.toml"
    check = run_cli("config", "check", str(config))
    assert check.returncode == 0, check.stderr
    effective = tomllib.loads(check.stdout)
    assert effective["capture"]["interface"] and effective["capture"]["rules"]
    from sensor import config as config_module
    from sensor.commands.parser import build_parser

    for unit, interface in (("truesource.service", "eth1"), ("truesource@.service", "eth7")):
        argv = exec_start((SYSTEMD / unit).read_text().replace("%i", interface))[1:]
        argv = [str(config) if arg.startswith("/etc/truesource/") else arg for arg in argv]
        args = config_module.parse_args(build_parser(), argv)
        assert args.command == "capture" and args.interface == interface and args.log_format == "journal"
