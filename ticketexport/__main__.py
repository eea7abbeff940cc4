"""`python -m ticketexport` runs the command line."""

from ticketexport.cli import main

raise SystemExit(main())
