"""``python -m hvdr``: the same as the ``hvdr`` command."""

import sys

from hvdr.cli import main

sys.exit(main())
