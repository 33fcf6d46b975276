"""Reports: one self-contained HTML page and its Markdown twin per run, from Results alone.

    figures.py        how a number is written (the terminal table, Markdown and HTML alike)
    load.py           what `gpubench report` reads: run directories and results files
    trust.py          which cases are comparable (a workload) and trustworthy, and the
                      fewest measured steps a spread is shown from
    configurations.py the configuration matrix: one row per case (pandas), its columns
    headroom.py       a peak against capacity: the device's; a cpu profile's cap is the kernel's
    recommendation.py go/no-go per profile and workload, the recommended case, why each
                      other lost; recommended.json
    projection.py     hours and cost to train N tokens or E epochs on measured tokens/s
    advice.py         statements from the numbers, each with the rule that fired it
    diagnostics.py    a case's interval, time per phase, telemetry and energy, as rows
    comparison.py     the gate's verdicts (gpubench.baseline) as one table, each case's trend
    provenance.py     where it ran, and the command that runs it again
    charts.py         matplotlib figures as inline SVG, a panel per workload or profile
    document.py       ReportData -> Report: every section's content, built once
    render.py         Report -> HTML and Markdown (jinja2 templates in templates/)
    write.py          report.html, report.md and recommended.json on disk
    tensorboard.py    each case's per-step series as a TensorBoard run

Nothing here knows pytest or a session: the plugin and ``gpubench report`` hand
it Results (and baselines).
"""
