"""Baselines and the regression gate: judgement beside the data.

    store.py     baseline files: <dir>/<profile>/<suite>.json, a history of runs per case
    metrics.py   what is gated, read from a Result: tokens/s, memory, final loss
    rules.py     thresholds (test, option, pyproject, defaults) and the evidence wanted
    evidence.py  the statistics: prediction interval over runs, Mann-Whitney over steps
    compare.py   compare(result, history, rules) -> CaseVerdict
    table.py     the verdicts as a table: terminal, Markdown, a failure's message
    sources.py   what `gpubench compare` reads: run dirs, results files, baselines
    offline.py   runs judged against histories read from files (compare, report)

Nothing here knows pytest; the plugin and ``gpubench compare`` call it.
"""
