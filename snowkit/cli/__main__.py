import sys

from snowkit.cli import main

sys.exit(main())
