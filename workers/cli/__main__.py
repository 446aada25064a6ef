"""`python -m workers.cli`: the same as the `fleet` command."""

from workers.cli import main

raise SystemExit(main())
