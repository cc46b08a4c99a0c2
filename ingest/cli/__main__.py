"""`python -m ingest.cli`: the same as `telemon`."""

import sys

from ingest.cli import main

sys.exit(main())
