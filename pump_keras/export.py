"""`python -m pump_keras.export`: the entry point of `pump_keras.cli.export`."""

from pump_keras.cli.export import main

if __name__ == "__main__":
    raise SystemExit(main())
