import sys

from pycnn.bench import main

sys.exit(main())
