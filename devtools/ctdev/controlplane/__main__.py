"""``python -m ctdev.controlplane``."""

import sys

from .cli import main

sys.exit(main())
