"""`python -m pullgate` is the `pullgate` command."""

from pullgate.tools.cli import main

raise SystemExit(main())
