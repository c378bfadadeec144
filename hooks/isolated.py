"""The hook for `python3 -I -S <this file> --config PATH` (a hooks.d `path`/`args` pair): an isolated
interpreter without `site`, which starts in about half the time (docs/hook.md, "Where the time goes").

Without site-packages on sys.path, the directory holding the `syscribe` package is added by hand: three
levels up from this file (site-packages/syscribe/hooks/isolated.py). Every module the hook imports,
on every path (hand-over, fallback tracer), is the standard library's or syscribe's own.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from syscribe.hooks.main import main

sys.exit(main())
