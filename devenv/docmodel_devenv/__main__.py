"""``python -m docmodel_devenv build|up|down``."""

import sys

from .cli import main

sys.exit(main())
