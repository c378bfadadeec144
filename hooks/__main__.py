"""`python -m syscribe.hooks`: the same as the `syscribe-hook` command."""

import sys

from syscribe.hooks.main import main

sys.exit(main())
