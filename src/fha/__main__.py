import sys

from fha.cli import main

sys.exit(main())
