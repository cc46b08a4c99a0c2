"""The reliability scenarios at full length: twenty kills, ten crashes at the failpoint,
longer storms (tests/integration/test_reliability.py with TELEMON_RELIABILITY=long).

    python -m loadtests.reliability                 # every scenario, long
    python -m loadtests.reliability -k kill         # one of them
"""

from __future__ import annotations

import os
import sys

import pytest


def main() -> int:
    os.environ["TELEMON_RELIABILITY"] = "long"
    return int(
        pytest.main(
            ["tests/integration/test_reliability.py", "-p", "no:cacheprovider", "-v", *sys.argv[1:]]
        )
    )


if __name__ == "__main__":
    sys.exit(main())
