"""``python -m tvolib.tfo.knowledge``."""
import sys

from .cli import main

sys.exit(main())
