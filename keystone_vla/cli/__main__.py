"""`python -m keystone_vla.cli` == `keystone`."""

import sys

from keystone_vla.cli import main

sys.exit(main())
