"""``python -m gpubench.validation``: the GPU validation kit (:mod:`gpubench.validation.kit`)."""

import sys

from gpubench.validation.kit import main

sys.exit(main())
