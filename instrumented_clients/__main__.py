"""``python -m instrumented_clients``: the same command line as ``instrumented-clients``."""

from instrumented_clients.cli import main

raise SystemExit(main())
