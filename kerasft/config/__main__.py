"""`python -m kerasft.config [--update-docs [PATH]]`: print the config reference, or rewrite docs/config.md."""

import sys

from kerasft.config.reference import reference, update_reference

if sys.argv[1:2] == ["--update-docs"]:
    update_reference(*sys.argv[2:3])
else:
    print(reference())
