import sys

from playlog.cli import main

sys.exit(main())
