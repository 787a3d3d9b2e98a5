"""`python -m datadream_lib.launch`."""

import sys

from datadream_lib.launch.cli import main

sys.exit(main())
