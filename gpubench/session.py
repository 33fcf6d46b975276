"""BenchSession: the work behind the plugin's hooks, importable and testable without pytest.

It resolves the hardware profiles, runs each case in its own worker process,
appends the Result to ``results.jsonl`` as soon as the case ends, feeds the
progress display, and reads the run's results back for the summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpubench.case import Case
from gpubench.profiles import (
    HardwareProfile,
    load_user_profiles,
    parse_profile_list,
)
from gpubench.progress import LiveProgress
from gpubench.result import Result
from gpubench.runner import run_case
from gpubench.storage import RunStore

DEFAULT_PROFILE = "auto"
DEFAULT_TIMEOUT_S = 1800.0


@dataclass
class SessionOptions:
    profiles: str = DEFAULT_PROFILE  # the --gpu-profile value
    timeout_s: float = DEFAULT_TIMEOUT_S
    reports_dir: Path = Path("reports")
    run_id: str = ""
    rootdir: Path | None = None  # where pyproject.toml's [tool.gpubench] is read
    profiles_file: Path | None = None
    keep_workdirs: bool = False


class BenchSession:
    def __init__(self, options: SessionOptions, case_progress: LiveProgress | None = None) -> None:
        self.options = options
        # draws the cases this process runs, while they run
        self.case_progress = case_progress
        self.store = RunStore(options.reports_dir, options.run_id)
        self._profiles: list[HardwareProfile] | None = None
        self._store_ready = False
        self.cases_total = 0  # gpubench cases collected to run (skips excluded)
        # the xdist controller's: a line per case its workers report (see the plugin)
        self.xdist_progress: LiveProgress | None = None

    @property
    def profiles(self) -> list[HardwareProfile]:
        """Resolved on first use (``auto`` asks NVML), so a pytest run without
        gpubench cases pays nothing. Raises ProfileError on a bad name."""
        if self._profiles is None:
            user = load_user_profiles(self.options.rootdir, self.options.profiles_file)
            self._profiles = parse_profile_list(self.options.profiles, user_profiles=user)
        return self._profiles

    def run(self, case: Case, profile: HardwareProfile, nodeid: str | None = None) -> Result:
        if not self._store_ready:
            self.store.create()
            self._store_ready = True
        if self.case_progress:
            self.case_progress.case_started(case, profile)
        result = run_case(
            case,
            profile,
            timeout_s=case.timeout_s or self.options.timeout_s,
            nodeid=nodeid,
            run_id=self.store.run_id,
            on_progress=self.case_progress.update if self.case_progress else None,
            keep_workdir=self.options.keep_workdirs,
        )
        self.store.append(result)
        if self.case_progress:
            self.case_progress.case_finished(result)
        return result

    def results(self) -> list[Result]:
        """Every result of this run (all xdist workers'), read back from results.jsonl."""
        if not self.store.results_path.exists():
            return []
        return self.store.read()
