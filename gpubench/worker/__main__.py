"""``python -m gpubench.worker``: run one case (:mod:`gpubench.worker.main`)."""

import sys

from gpubench.worker.main import main

sys.exit(main())
