import sys

from perf.suite import main

sys.exit(main())
