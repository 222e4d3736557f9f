"""`python -m pump_keras.evaluate`: the entry point of `pump_keras.cli.evaluate`."""

from pump_keras.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
