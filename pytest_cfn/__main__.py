"""``python -m pytest_cfn`` is the ``cfn`` command."""

import sys

from pytest_cfn.cli import main

sys.exit(main())
