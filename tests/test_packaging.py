"""Packaging: every memjax package ships, the configs ship inside the wheel as memjax.configs,
and a non-editable install runs ``memjax-audit --config=digits_audit:tiny`` from elsewhere."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import sysconfig
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_package_and_the_configs_are_listed_for_the_wheel():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        st = tomllib.load(f)["tool"]["setuptools"]
    found = {os.path.relpath(os.path.dirname(p), ROOT).replace(os.sep, ".")
             for p in glob.glob(os.path.join(ROOT, "memjax", "**", "__init__.py"), recursive=True)}
    assert found | {"memjax.configs"} == set(st["packages"])
    assert st["package-dir"] == {"memjax.configs": "configs"}
    assert os.path.isfile(os.path.join(ROOT, "configs", "__init__.py"))


@pytest.mark.slow
def test_non_editable_install_runs_the_audit_by_config_name(tmp_path):
    """``pip install`` of the wheel (no dependencies: the test environment's site-packages are
    appended to the new environment's path), then the console script from another folder."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(dist), ROOT], check=True, cwd=tmp_path, timeout=600)
    venv = tmp_path / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)],
                   check=True, timeout=300)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, "test_deps.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    wheel = glob.glob(str(dist / "memjax-*.whl"))[0]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # --ignore-installed: the appended site-packages hold the test environment's own memjax
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--ignore-installed", wheel], check=True, timeout=600, env=env)
    env["JAX_PLATFORMS"] = "cpu"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run([str(venv / "bin" / "memjax-audit"), "--config=digits_audit:tiny",
                          f"--workdir={tmp_path / 'run'}", "--noprogress"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    where = subprocess.run([str(py), "-c", "import memjax, memjax.configs; print(memjax.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True).stdout
    assert where.startswith(site)
    assert (tmp_path / "run" / "report.json").exists()
