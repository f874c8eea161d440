"""`python -m covidxray ...`: the `covidxray` command without installing it."""

import sys

from covidxray.app.command import main

sys.exit(main())
