"""Configuration errors name the file, the table, the key and the problem, and exit 2."""

from __future__ import annotations

import pytest
from conftest import Home

CASES = [
    ('[vault]\npath = "{file}"\n', "config.toml: [vault] path: not a directory: {file}"),
    ('[derive]\nlong_edge = "big"\n', "config.toml: [derive] long_edge: expected int, got str: 'big'"),
    ('[derive]\nlong_edge = 10\n', "config.toml: [derive] long_edge: must be between 64 and 65535; got 10"),
    ('[cloak]\nstrength = "max"\n', "config.toml: [cloak] strength: must be one of off, light, standard, strong"),
    ('[rights]\ndata_mining = "NO"\n', "config.toml: [rights] data_mining: must be one of DMI-UNSPECIFIED"),
    ('[s3]\nurl = "http://bucket"\n', "config.toml: [s3] url: must look like s3://BUCKET/PREFIX"),
    ('[[source]]\npath = "/x"\nwatch_mode = "inotify"\n', "config.toml: [source #1] watch_mode: must be one of"),
    ('[engine]\nsettle = 3\n', "config.toml: [engine] settle: unknown key"),
    ('[valt]\npath = "/x"\n', "config.toml: [valt]: unknown table"),
    ('[vault\n', "config.toml: not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), CASES)
def test_config_errors_are_specific(make_home, text: str, message: str):
    home: Home = make_home()
    not_a_dir = home.base / "a-file"
    not_a_dir.write_text("")
    home.config_file.write_text(text.format(file=not_a_dir))
    for command in (["status"], ["run", "--once"]):
        result = home.cli(*command)
        assert result.returncode == 2, (command, result.stderr)
        assert message.format(file=not_a_dir) in result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_explicit_config_file(make_home):
    home = make_home()
    result = home.cli("--config", str(home.base / "nope.toml"), "status")
    assert result.returncode == 2 and "nope.toml: no such config file" in result.stderr
