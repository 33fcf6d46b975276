"""``python -m gpubench.cli``: the ``gpubench`` console script."""

import sys

from gpubench.cli import main

sys.exit(main())
