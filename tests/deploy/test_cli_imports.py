"""``kubeward collect`` and ``kubeward shim`` load no detection code: the command line imports only the module of the
command it runs (each of scikit-learn, SciPy and the worker's pipeline added ~127 MiB to every collector before)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deploy.cli import build_parser, main

_PROBE = """
import sys
from deploy import cli
cli.build_parser({command!r})
import {runtime}
heavy = sorted(m for m in ("sklearn", "scipy", "streams", "streams.pipeline", "faust") if m in sys.modules)
print(",".join(heavy))
"""


@pytest.mark.parametrize(("command", "runtime"), [("collect", "deploy.collect, ingest.collectors.files, ingest.collectors.als"),
                                                  ("shim", "enforcement.server")])
def test_a_data_plane_command_loads_no_detection_code(command: str, runtime: str) -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE.format(command=command, runtime=runtime)], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"kubeward {command} imported {done.stdout.strip()}"


def test_the_full_parser_still_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    choices = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"collect", "shim", "worker", "policy", "whatif", "blueprint", "findings", "kafka", "rules"} <= set(choices)
    with pytest.raises(SystemExit):
        main(["no-such-command"])
    assert "invalid choice" in capsys.readouterr().err


def test_a_lazily_built_command_parses_its_own_options() -> None:
    args = build_parser("policy").parse_args(["policy", "suggest", "--parquet", "x.parquet", "--min-calls", "3"])
    assert args.min_calls == 3 and callable(args.func)
