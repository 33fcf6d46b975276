"""What both sides of the process boundary agree on, importing neither torch nor pytest.

The records that cross it (:mod:`~gpubench.contracts.case`,
:mod:`~gpubench.contracts.result` and the reading policy of
:mod:`~gpubench.contracts.schema`, the files of :mod:`~gpubench.contracts.protocol`),
the catalogues a Case names (models in :mod:`gpubench.contracts.catalog`, hardware in
:mod:`gpubench.contracts.profiles`), and the rules both sides apply to them (byte units,
FLOPs per token, what an allocation failure looks like, what makes a figure
implausible). Modules here import only each other.
"""
