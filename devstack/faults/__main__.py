"""`python -m devstack.faults`: what bin/faults runs."""

from devstack.faults.suite import main

raise SystemExit(main())
