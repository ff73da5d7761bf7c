"""`python -m sensor` runs the command line."""

import sys

from sensor.cli import main

sys.exit(main())
