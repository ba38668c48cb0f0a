"""`python -m docmodel_server` runs `docmodel-server`."""

from docmodel_server.cli import main

raise SystemExit(main())
