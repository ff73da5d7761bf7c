"""`python -m sensor` runs the command line."""

import sys

from sensor.entry import main

sys.exit(main())
