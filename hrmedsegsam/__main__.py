"""``python -m hrmedsegsam`` runs the command line."""

import sys

from hrmedsegsam.cli import main

sys.exit(main())
