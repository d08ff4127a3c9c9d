"""`python -m pullgate` is the `pullgate` command."""

from pullgate.cli import main

raise SystemExit(main())
