"""`python -m slawatch.cli`: the `slawatch` command."""

from slawatch.cli import main

raise SystemExit(main())
