"""Reports: one self-contained HTML page and its Markdown twin per run, from Results alone.

    figures.py      how a number is written (the terminal table, Markdown and HTML alike)
    load.py         what `gpubench report` reads: run directories and results files
    matrix.py       the configuration matrix: one row per case (pandas)
    verdict.py      go/no-go per profile, the recommended case, why each other lost
    projection.py   hours and cost to train N tokens or E epochs on measured tokens/s
    advice.py       statements from the numbers, each with the rule that fired it
    comparison.py   the gate's verdicts (gpubench.baseline) and each case's trend
    environment.py  where it ran, and the command that runs it again
    charts.py       matplotlib figures as inline SVG
    document.py     ReportData -> Report: every section's content, built once
    render.py       Report -> HTML and Markdown (jinja2 templates in templates/)
    write.py        report.html, report.md and recommended.json on disk
    tensorboard.py  each case's per-step series as a TensorBoard run

Nothing here knows pytest or a session: the plugin and ``gpubench report`` hand
it Results (and baselines).
"""
