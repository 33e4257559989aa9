"""Configuration errors name the file, the table, the key and the problem, and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Home
from shutterlock.config import load
from shutterlock.errors import EXIT_USAGE, ConfigError

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
def test_config_errors_are_specific(tmp_path: Path, text: str, message: str):
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    config_file = tmp_path / "config.toml"
    config_file.write_text(text.format(file=not_a_dir))
    with pytest.raises(ConfigError) as raised:
        load(config_file)
    assert message.format(file=not_a_dir) in str(raised.value)
    assert raised.value.exit_code == EXIT_USAGE and "\n" not in str(raised.value)


def test_the_cli_reports_a_config_error_in_one_line_and_exits_2(make_home):
    """The parsing is tested above in-process; here, once, what the user sees from the real commands."""
    home: Home = make_home()
    home.config_file.write_text('[derive]\nlong_edge = 10\n')
    for command in (["status"], ["run", "--once"]):
        result = home.cli(*command)
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.strip() == \
            "shutterlock: config.toml: [derive] long_edge: must be between 64 and 65535; got 10"


def test_missing_explicit_config_file(make_home):
    home = make_home()
    result = home.cli("--config", str(home.base / "nope.toml"), "status")
    assert result.returncode == 2 and "nope.toml: no such config file" in result.stderr
