"""``python -m draem_zoo.cli`` is the ``draem-zoo`` command."""

import sys

from .parser import main

sys.exit(main())
