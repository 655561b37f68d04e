"""`python -m bench.sweep`: see bench.sweep.cli."""
import sys

from bench.sweep.cli import main

sys.exit(main())
