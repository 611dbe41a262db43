"""``python -m resnest_zoo``: the same as the ``resnest-zoo`` command."""
import sys

from .cli import main

sys.exit(main())
