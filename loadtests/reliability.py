"""The reliability scenarios at full length: twenty kills, ten crashes at the failpoint,
longer storms, PostgreSQL away for 60 s (tests/integration/test_reliability.py and
test_database_outage.py with TELEMON_RELIABILITY=long).

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
            [
                "tests/integration/test_reliability.py",
                "tests/integration/test_database_outage.py",  # 60 s without PostgreSQL
                "-p",
                "no:cacheprovider",
                "-v",
                *sys.argv[1:],
            ]
        )
    )


if __name__ == "__main__":
    sys.exit(main())
