"""What runs in a case's own process: ``python -m gpubench.worker`` and everything it
starts — the engines, the trackers, the data, the model builders, the memory cap and
the lifetime helpers (tether, prctl).

This side of the process boundary imports only :mod:`gpubench.contracts` and itself,
never the parent's side (the runner, the session, the gate, the report);
``tests/test_layout.py`` holds it by importing the entry in a fresh interpreter and
reading ``sys.modules``. Importing this package loads nothing.
"""
