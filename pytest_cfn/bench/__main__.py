"""``python -m pytest_cfn.bench``: runs ``python -m pytest_cfn.measure.microbench``, saying so."""

import sys

from pytest_cfn.measure.microbench.command import main

if __name__ == "__main__":
    print("python -m pytest_cfn.bench is now python -m pytest_cfn.measure.microbench (the Event "
          "Bus micro-benchmark; cfn bench is the agent sweep)", file=sys.stderr)
    sys.exit(main())
