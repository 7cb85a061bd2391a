"""``python -m pytest_cfn.bench``."""

import sys

from pytest_cfn.bench.command import main

if __name__ == "__main__":
    sys.exit(main())
