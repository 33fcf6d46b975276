"""The error a bad declaration raises, shared by every module that checks one.

Kept apart from :mod:`gpubench.contracts.case` so that the checks a Case runs (the model
spec's, in :mod:`gpubench.contracts.catalog.spec`) can raise it without importing the Case.
"""

from __future__ import annotations


class CaseError(ValueError):
    """A Case (or one of its flags) has a value gpubench cannot run."""
