"""Each option is declared once (gpubench/options.py): the pytest plugin and the gpubench
command show the same help for it and refuse a bad value with the same sentence."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from gpubench import options, plugin
from gpubench.cli import build_parser
from gpubench.cli import main as cli_main


class RecordingGroup:
    """What ``pytest_addoption`` declares, as pytest's option group receives it."""

    def __init__(self) -> None:
        self.options: dict[str, dict[str, object]] = {}

    def getgroup(self, name: str, description: str = "") -> RecordingGroup:
        assert name == "gpubench"
        return self

    def addoption(self, *names: str, **attrs: object) -> None:
        for name in names:
            self.options[name] = attrs


def pytest_options() -> dict[str, dict[str, object]]:
    """The plugin's options: flag -> the keyword arguments pytest got (help, dest, ...)."""
    recorder = RecordingGroup()
    plugin.pytest_addoption(recorder)  # type: ignore[arg-type]
    return recorder.options


def cli_actions() -> Iterator[tuple[str, argparse.Action]]:
    """(subcommand, action) for every argument of every gpubench subcommand."""
    subparsers = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.option_strings:
                yield name, action


SHARED = [o for o in options.PLUGIN_OPTIONS if o.cli_flag is not None]


def test_some_options_are_shared() -> None:
    keys = {o.key for o in SHARED}
    assert {"threshold", "compare_any_env", "safety_margin", "tensorboard", "profiles"} <= keys


@pytest.mark.parametrize("option", SHARED, ids=lambda o: o.key)
def test_the_plugin_and_the_command_show_one_help_text(option: options.Option) -> None:
    plugin_help = pytest_options()[str(option.pytest_flag)]["help"]
    commands = [
        (name, action.help)
        for name, action in cli_actions()
        if option.cli_flag in action.option_strings
    ]
    assert commands, f"no gpubench subcommand has {option.cli_flag}"
    for name, help_text in commands:
        assert help_text == plugin_help, f"gpubench {name} {option.cli_flag}"


def test_no_subcommand_declares_a_shared_option_again() -> None:
    by_key = {o.key: o for o in (*options.PLUGIN_OPTIONS, *options.PROJECTION, options.ROOTDIR)}
    drifted = [
        f"gpubench {name} {action.option_strings[0]}"
        for name, action in cli_actions()
        if action.dest in by_key and action.help != by_key[action.dest].help
    ]
    assert not drifted, drifted


def test_the_rootdir_option_reads_the_same_everywhere() -> None:
    helps = {a.help for _, a in cli_actions() if "--rootdir" in a.option_strings}
    assert helps == {options.ROOTDIR.help}


def test_the_plugin_declares_only_the_options_module() -> None:
    declared = {str(o.pytest_flag) for o in options.PLUGIN_OPTIONS}
    assert set(pytest_options()) == declared


@pytest.mark.parametrize(
    ("pytest_args", "cli_args", "sentence"),
    [
        (
            ["--gpubench-threshold", "tokens_per_s=2"],
            ["compare", "a", "b", "--threshold", "tokens_per_s=2"],
            "tokens_per_s=2.0 must be a number in (0, 1)",
        ),
        (
            ["--gpubench-safety-margin", "1.5"],
            ["report", "r", "--safety-margin", "1.5"],
            "'1.5': expected a fraction of capacity in [0, 1)",
        ),
    ],
)
def test_a_bad_value_gets_the_same_sentence_in_both(
    pytester: pytest.Pytester,
    capsys: pytest.CaptureFixture[str],
    pytest_args: list[str],
    cli_args: list[str],
    sentence: str,
) -> None:
    result = pytester.runpytest(*pytest_args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert sentence in result.stderr.str()
    assert cli_main(cli_args) == 2
    assert sentence in capsys.readouterr().err
