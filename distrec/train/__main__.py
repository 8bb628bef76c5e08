import sys

from distrec.train.entry import main

sys.exit(main())
