"""``python -m ssmrec`` is the same as the ``ssmrec`` command."""

import sys

from ssmrec.cli import main

sys.exit(main())
