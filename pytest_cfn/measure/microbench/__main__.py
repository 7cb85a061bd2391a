"""``python -m pytest_cfn.measure.microbench``."""

import sys

from pytest_cfn.measure.microbench.command import main

if __name__ == "__main__":
    sys.exit(main())
