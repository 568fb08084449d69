"""``python -m fitnets.search SEARCH_DIR [INDEX]``: one worker (as fitnets.search.worker)."""

import sys

from fitnets.search.worker import main

raise SystemExit(main(sys.argv[1:]))
