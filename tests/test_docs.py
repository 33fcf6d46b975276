"""Every shell command the docs show runs as written, or this file says why a test cannot.

The commands are the lines of the code blocks of README.md, reports/README.md and docs/
(not docs/examples: a report's rerun commands, which tests/test_examples.py keeps current).
Each matches exactly one rule below, and each rule matches a command:

- RUN: run as written (placeholders such as ``<old-run>`` filled in) in a workspace that holds
  the suites, real runs of the CPU smoke suite under ``reports/`` and the committed baselines;
  it must exit 0, or 1 where the docs say 1 means "a regression was found".
- COLLECT: a pytest run of training cases (minutes, or a GPU): collected with its options,
  profiles and paths, which fails on a wrong profile, option or path.
- NOT_RUN: with the reason, and where it is run instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "reports" / "README.md"] + sorted(
    p for p in (ROOT / "docs").rglob("*.md") if "examples" not in p.relative_to(ROOT).parts
)
PROGRAMS = ("pytest", "gpubench", "python", "python3", "bash", "pytest-benchmark", "/usr/bin/time")
GATE_RUNS = ROOT / "tests" / "data" / "gate"
OLD_RUN, NEW_RUN = "20261201-000000-0001", "20261201-000100-0008"


@dataclass(frozen=True)
class Rule:
    pattern: str  # a regular expression the whole command matches
    kind: str  # RUN, COLLECT or NOT_RUN
    why: str = ""  # NOT_RUN: the reason
    exits: tuple[int, ...] = (0,)  # RUN: the exit statuses that mean it worked

    def matches(self, command: str) -> bool:
        return re.fullmatch(self.pattern, command) is not None


RUN, COLLECT, NOT_RUN = "RUN", "COLLECT", "NOT_RUN"
JUDGED = (0, 1)  # compare: exit 1 is its answer "a regression", not a failure to run
RULES = (
    Rule(r"gpubench estimate .*", RUN),
    Rule(r"gpubench compare .*", RUN, exits=JUDGED),
    Rule(r"gpubench report .*", RUN),
    Rule(r"gpubench export .*", RUN),
    Rule(r"pytest-benchmark compare .*", RUN),
    Rule(r"python -c \"import pandas .*", RUN),
    Rule(r"python benchmarks/gate_noise\.py .*", RUN),
    Rule(r"(/usr/bin/time )?pytest suites(?!.*\$SLURM_).*", COLLECT),
    Rule(
        r"pytest suites/ .*\$SLURM_ARRAY_TASK_ID.*",
        NOT_RUN,
        "a SLURM array task's line (SLURM gives the index): docs/scale.md's plain shard line "
        "is collected, and tests/test_merge.py runs three shards of the smoke suite",
    ),
    Rule(
        r"gpubench merge .*",
        NOT_RUN,
        "merges shard runs this workspace does not hold: tests/test_merge.py merges three "
        "real shards of the smoke suite and checks every refusal",
    ),
    Rule(
        r"python3 -m venv \.venv .*|python -m pip install .*",
        NOT_RUN,
        "the install: .ci/run runs these lines on a fresh clone (test_the_install_lines_are_"
        "what_ci_and_the_day_one_script_run holds that they are the README's)",
    ),
    Rule(r"python -m pytest tests/ -n 2", NOT_RUN, "this very test suite: .ci/run runs it"),
    Rule(
        r"bash tools/day-one\.sh .*",
        NOT_RUN,
        "a fresh clone's install and three gated runs (20 minutes): docs/ci.md has its figures",
    ),
    Rule(
        r"python -m gpubench\.validation --out DIR.*",
        NOT_RUN,
        "the GPU validation kit: tests/test_validate.py runs its --smoke form",
    ),
    Rule(
        r"bash tools/prepare-gpu-wheels\.sh|python3 -m pip install .* --target /tmp/site .*",
        NOT_RUN,
        "builds wheels for, and installs them on, an offline GPU machine",
    ),
    Rule(
        r"python benchmarks/(harness_overhead|report_render|adaptive_stop|estimate_probe"
        r"|calibration|correctness|machine_drift)\.py .*",
        NOT_RUN,
        "a benchmark of minutes: tests/test_benchmarks.py runs it small",
    ),
)


def documented_commands() -> list[tuple[str, str]]:
    """(file, command) for each command line of each shell code block, in document order;
    a line continued with a backslash is one command, a trailing comment is dropped."""
    md = MarkdownIt("commonmark")
    found = []
    for doc in DOCS:
        for token in md.parse(doc.read_text(encoding="utf-8")):
            shell = token.type == "code_block" or (
                token.type == "fence" and token.info.strip() in ("bash", "sh", "console", "")
            )
            if not shell:
                continue
            for line in token.content.replace("\\\n", " ").splitlines():
                command = re.sub(r"\s+#\s.*$", "", re.sub(r"\s+", " ", line.strip()))
                if command.split(" ")[0] in PROGRAMS:
                    found.append((str(doc.relative_to(ROOT)), command))
    return found


def rule_of(command: str) -> Rule:
    matching = [rule for rule in RULES if rule.matches(command)]
    assert len(matching) == 1, f"{command!r} matches {len(matching)} rules: {matching}"
    return matching[0]


def test_every_documented_command_has_exactly_one_rule_and_every_rule_a_command() -> None:
    commands = documented_commands()
    assert len(commands) > 20, commands  # the extraction found the docs' commands
    for _, command in commands:
        rule_of(command)
    for rule in RULES:
        assert any(rule.matches(c) for _, c in commands), f"no documented command for {rule}"


def test_the_install_lines_are_what_ci_and_the_day_one_script_run() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Install and run") :]
    block = section[section.index("```bash\n") + 8 : section.index("```\n", 8)]
    install = [line for line in block.splitlines() if not line.startswith("pytest ")]
    assert len(install) == 3, block
    for script in (ROOT / ".ci" / "run", ROOT / "tools" / "day-one.sh"):
        lines = script.read_text(encoding="utf-8").splitlines()
        for line in install:
            assert line in lines, f"{script.name} does not run README's {line!r}"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m pytest tests/ -n 2\n" in ci  # README's test command, as written


def fill_in(command: str, workspace: Path) -> str:
    """The command with its placeholders filled: runs on disk, optional flags taken."""
    command = re.sub(r"reports/<[^>]+>", f"reports/{OLD_RUN}", command)
    command = re.sub(r"\[(--[^\]]+)\]", r"\1", command)  # [--json] -> --json
    command = command.replace("/tmp/", f"{workspace}/")
    command = command.replace("--alpha A --confirm C", "--alpha 0.05 --confirm 2")
    command = command.replace("tokens_per_s=T", "tokens_per_s=0.35")
    if command.startswith("/usr/bin/time "):
        command = command[len("/usr/bin/time ") :]
    return command


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone's top folder as the docs assume it: the suites, tests/data, benchmarks, the
    committed baselines, two real runs of the smoke suite in reports/ (latest the newer),
    run folders the report examples merge, and a saved pytest-benchmark run of the newer."""
    work = tmp_path_factory.mktemp("docs")
    for name in ("suites", "tests", "benchmarks", "pyproject.toml", "gpubench"):
        (work / name).symlink_to(ROOT / name)
    shutil.copytree(ROOT / "baselines", work / "baselines")
    for run_id, source in ((OLD_RUN, "quiet-1.jsonl"), (NEW_RUN, "quiet-8.jsonl")):
        (work / "reports" / run_id).mkdir(parents=True)
        shutil.copy(GATE_RUNS / source, work / "reports" / run_id / "results.jsonl")
    (work / "reports" / "latest").symlink_to(NEW_RUN)
    for folder, source in (("run-a", 2), ("run-b", 3), ("shard-1", 4), ("shard-2", 5)):
        (work / folder).mkdir()
        shutil.copy(GATE_RUNS / f"quiet-{source}.jsonl", work / folder / "results.jsonl")
    _shell(f"gpubench export reports/{NEW_RUN} -o 0002_pr.json", work)
    return work


def _shell(command: str, cwd: Path, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout_s, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("doc", sorted({doc for doc, _ in documented_commands()}))
def test_the_commands_of_a_doc_run_as_written(doc: str, workspace: Path) -> None:
    """In document order, in one workspace: a doc's later command may read what an earlier
    one wrote (an export, then pytest-benchmark compare)."""
    for _, command in [(d, c) for d, c in documented_commands() if d == doc]:
        rule = rule_of(command)
        if rule.kind == NOT_RUN:
            continue
        line = fill_in(command, workspace)
        if rule.kind == COLLECT:
            line += " --collect-only -q -p no:cacheprovider"
        done = _shell(line, workspace)
        said = f"{doc}: {line}\nexit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-999:]}"
        allowed = rule.exits if rule.kind == RUN else (0,)
        assert done.returncode in allowed, said
        assert "Traceback" not in done.stderr, said


def test_the_python_examples_run_and_declare_what_the_readme_says() -> None:
    """README's declaration example runs (its imports exist) and declares 8 cases, as said."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert len(list(namespace["LADDER"])) == 8  # type: ignore[call-overload]
    assert "This declares\n8 cases" in readme
