"""`python -m examples.mappers.thermometer --help` (run from the repository root)."""

import sys

from examples.mappers.thermometer.mapper import main

sys.exit(main())
