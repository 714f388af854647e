"""The console: quiet libraries, interval progress lines in files, configs by name, and the
README's first command (on the tiny audit config) printing at most 60 lines."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pytest

from memjax import console
from memjax.scripts import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_progress_writes_interval_lines_to_a_file():
    out = io.StringIO()
    bar = console.Progress(100, desc="train", every=25, stream=out)
    for i in range(100):
        if i % 25 == 0:
            bar.set_postfix(loss=1.0 / (i + 1))
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 4
    assert lines[0].startswith("train: step 25/100, loss 1, ") and "steps/s" in lines[0]
    assert "ETA" in lines[0] and "ETA" not in lines[-1] and "100/100" in lines[-1]


def test_progress_disabled_prints_nothing():
    out = io.StringIO()
    assert list(console.progress(range(5), enabled=False, stream=out)) == list(range(5))
    assert out.getvalue() == ""


def test_quiet_lowers_library_logging_and_verbosity_restores_it():
    console.quiet(0)
    assert logging.getLogger("jax").level == logging.WARNING
    assert logging.getLogger("orbax").level == logging.WARNING
    console.quiet(1)
    assert logging.getLogger("jax").level == logging.INFO
    console.quiet(0)


def test_configs_resolve_by_name_and_path(tmp_path):
    path = common.resolve_config("digits_audit")
    assert path.endswith(os.path.join("", "digits_audit.py")) and os.path.isfile(path)
    assert common.resolve_config("digits_side:tiny") == \
        common.resolve_config("digits_side") + ":tiny"
    own = tmp_path / "mine.py"
    own.write_text("")
    assert common.resolve_config(str(own)) == str(own)
    assert common.resolve_argv(["x", "--config", "digits_audit", "--workdir=w"])[2] == path
    with pytest.raises(SystemExit, match="shipped configs: .*digits_audit"):
        common.resolve_config("no_such_config")


@pytest.mark.slow
def test_readme_first_command_prints_few_lines_and_no_carriage_returns(tmp_path):
    """The README's first command, on the tiny variant of its config, writing to a file (as
    when redirected): at most 60 lines, no absl INFO lines, no tqdm frames, the summary."""
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "memjax.scripts.audit",
                               "--config=digits_audit:tiny", f"--workdir={tmp_path / 'run'}"],
                              cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT, timeout=1200,
                              env={**os.environ, "JAX_PLATFORMS": "cpu",
                                   "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")})
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    lines = text.splitlines()
    assert len(lines) <= 60, text
    assert "\r" not in text
    assert not [ln for ln in lines if ln[:1] == "I" and ln[1:5].isdigit()], text  # absl INFO
    assert "backend" not in text.lower(), text
    assert any(ln.startswith("train: step 20/20") for ln in lines), text
    assert "memorization audit" in text and (tmp_path / "run" / "report.md").exists()
    # the script added memjax's XLA:CPU flag and kept the one already set (tests/conftest.py's -O0)
    flags = json.loads((tmp_path / "run" / "run_info.json").read_text())["xla_flags"].split()
    assert "--xla_cpu_experimental_ynn_fusion_type=" in flags, flags
    assert "--xla_backend_optimization_level=0" in flags, flags
    assert "--xla_backend_optimization_level=1" not in flags, flags
