"""`python -m kerasft <command> ...`: the `kerasft` command, for environments without its script."""

import sys

from kerasft.cli import main

sys.exit(main())
