"""Make the standard-library text corpus of the LM recipes (recipes/text-*.yaml):

    python tools/stdlib_corpus.py corpora/stdlib-small            # ~300 KB, the short recipe
    python tools/stdlib_corpus.py corpora/stdlib --limit-kb 3000  # a larger one

Python's own top-level .py sources, copied in name order (fitnets.data.text.stdlib_corpus).
"""

import argparse

from fitnets.data.text import stdlib_corpus

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("dest")
parser.add_argument("--limit-kb", type=int, default=300, help="stop after this many KB")
args = parser.parse_args()
print(stdlib_corpus(args.dest, args.limit_kb * 1000))
