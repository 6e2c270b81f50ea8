"""``python -m medvit``: the ``medvit`` command."""
import sys

from medvit.cli import main

sys.exit(main())
