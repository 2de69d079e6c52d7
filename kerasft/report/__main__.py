import sys

from kerasft.report.cli import main

sys.exit(main())
