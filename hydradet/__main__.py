import sys

from hydradet.cli import main

sys.exit(main())
