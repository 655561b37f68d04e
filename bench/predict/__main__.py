import sys

from bench.predict.cli import main

sys.exit(main())
