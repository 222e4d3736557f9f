"""`python -m pump_keras <command> ...`: see `pump_keras.cli.main`."""

from pump_keras.cli.main import main

raise SystemExit(main())
