"""Where the numbers were taken, and the command that takes them again.

Each distinct environment fingerprint of the results is one column of facts
(device, driver, CUDA, torch, DeepSpeed, gpubench, git commit and whether the
tree was dirty, ...) with the profiles and runs it covers. The rerun command
is the session's own command line when the run recorded it
(``invocation.json``); otherwise it is made from the results' pytest ids and
profiles, and says so.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from gpubench.contracts.result import Environment, Result
from gpubench.contracts.units import MiB
from gpubench.report import figures
from gpubench.storage import Invocation


@dataclass(frozen=True)
class EnvironmentColumn:
    facts: tuple[tuple[str, str], ...]  # (what, value), only what was recorded
    profiles: tuple[str, ...]
    run_ids: tuple[str, ...]
    cases: int


def _facts(env: Environment) -> list[tuple[str, str]]:
    git = env.git_commit or ""
    if git and env.git_dirty:
        git += " (dirty: uncommitted changes)"
    facts = [
        ("device", f"{env.device}" + (f" x {env.device_count}" if env.device_count > 1 else "")),
        (
            "device memory",
            f"{figures.gib(env.device_memory_bytes)} GiB" if env.device_memory_bytes else "",
        ),
        ("driver", env.driver or ""),
        ("CUDA", env.cuda or ""),
        ("cuDNN", env.cudnn or ""),
        ("torch", env.torch),
        ("DeepSpeed", env.deepspeed or ""),
        ("transformers", env.transformers or ""),
        ("gpubench", env.gpubench),
        ("git commit", git),
        ("python", env.python),
        ("CPU", f"{env.cpu}, {env.cpu_count} cores" if env.cpu else ""),
        (
            "host memory",
            f"{figures.gib(env.host_memory_bytes)} GiB" if env.host_memory_bytes else "",
        ),
        ("torch threads", str(env.torch_threads) if env.torch_threads else ""),
        ("allocator", env.allocator_conf or ""),
        ("launch environment", " ".join(f"{k}={v}" for k, v in env.launch_env)),
        ("platform", env.platform),
        ("host", env.hostname),
    ]
    return [(what, value) for what, value in facts if value]


def environment_columns(results: Sequence[Result]) -> list[EnvironmentColumn]:
    groups: dict[Environment, list[Result]] = {}
    for result in results:
        if result.environment != Environment():  # a worker that never started records none
            # torchrun's command line names the case (its rendezvous id): it is the case's,
            # shown with its ranks, not a fact of the machine
            machine = dataclasses.replace(result.environment, launch_command=())
            groups.setdefault(machine, []).append(result)
    return [
        EnvironmentColumn(
            tuple(_facts(env)),
            tuple(dict.fromkeys(r.profile.name for r in runs)),
            tuple(dict.fromkeys(r.run_id for r in runs if r.run_id)),
            len(runs),
        )
        for env, runs in groups.items()
    ]


@dataclass(frozen=True)
class Rerun:
    commands: tuple[str, ...]
    recorded: bool  # the session's own command line, not one made from the results


def rerun_command(results: Sequence[Result], invocations: Sequence[Invocation]) -> Rerun | None:
    if invocations:
        return Rerun(tuple(dict.fromkeys(i.command for i in invocations)), recorded=True)
    nodeids = list(dict.fromkeys(r.nodeid for r in results if r.nodeid))
    if not nodeids:
        return None
    profiles = dict.fromkeys(profile_spec(r) for r in results)
    args = ["pytest", *nodeids, "--gpu-profile", ",".join(profiles)]
    return Rerun((shlex.join(args),), recorded=False)


def profile_spec(result: Result) -> str:
    """How ``--gpu-profile`` names the result's profile: ``NAME``, or ``NAME:MEMORY`` when
    its capacity was set on the command line (a built-in's, changed)."""
    from gpubench.contracts.profiles import builtin_profiles

    profile = result.profile
    builtin = builtin_profiles().get(profile.name)
    if builtin is not None and builtin.memory_bytes != profile.memory_bytes:
        return f"{profile.name}:{profile.memory_bytes // MiB}MiB"
    return profile.name
