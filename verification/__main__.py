"""`python -m verification DIR [--json] [--no-smoke]`: the checks on a directory, without Django."""

import sys

from verification.core.cli import main

sys.exit(main())
