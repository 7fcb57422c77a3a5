"""Printed commands: a shell splits them into the intended words and Hydra reads each value back unchanged."""

from __future__ import annotations

import shlex

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from nas.cli import command, fail, hydra_value

NAMES = ["sparse_attn-tiny-long_range", "a&b", "it's", 'say "hi"', "both ' and \"", "a b", "x,y", "k=v", "1", "0.5",
         ".5", "-1", "true", "TRUE", "null", "NaN", "Infinity", "", "-rf", "$(touch pwned)", "`id`", "back\\slash",
         "ends\\", "q\\'x", 'q\\"x', "a;b|c>d", "sqlite:////tmp/x.db",
         "postgresql+psycopg://u:***@h:5432/db?sslmode=require"]


@pytest.mark.parametrize("name", NAMES)
def test_a_printed_command_runs_as_meant(name):
    line = command("python", "-m", "nas.export", study=name, policy="knee")
    words = shlex.split(line)  # what a POSIX shell passes to the program
    assert words[:3] == ["python", "-m", "nas.export"] and len(words) == 5
    overrides = OverridesParser.create().parse_overrides(words[3:])
    assert [(o.key_or_group, o.value()) for o in overrides] == [("study", name), ("policy", "knee")]


def test_plain_values_stay_readable():
    assert command("python", "-m", "nas.dashboard", study="sparse_attn-tiny-long_range") == \
        "python -m nas.dashboard study=sparse_attn-tiny-long_range"
    assert hydra_value("a&b") == '"a&b"' and hydra_value("true") == '"true"'


def test_fail_is_one_line_and_status_2(capsys):
    with pytest.raises(SystemExit) as done:
        fail("store.url='x' is not a SQLAlchemy URL")
    assert done.value.code == 2
    assert capsys.readouterr().err == "error: store.url='x' is not a SQLAlchemy URL\n"
