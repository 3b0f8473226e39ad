import sys

from livedub.cli import main

sys.exit(main())
