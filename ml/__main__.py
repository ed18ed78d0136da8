"""`python -m ml ...`: see `ml.cli.main`. Runs under tcmalloc when it is installed."""

from __future__ import annotations

import sys

from ml.cli.main import main
from ml.runtime import reexec_with_tcmalloc

if __name__ == "__main__":
    reexec_with_tcmalloc(sys.argv[1:])
    sys.exit(main())
