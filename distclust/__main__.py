"""`python -m distclust …` is the same as the `distclust` command."""
from .cli import main

raise SystemExit(main())
