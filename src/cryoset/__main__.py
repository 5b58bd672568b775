"""``python -m cryoset``."""

from cryoset.cli.main import main

raise SystemExit(main())
