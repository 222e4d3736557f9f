"""`python -m pump_keras.demo`: the entry point of `pump_keras.cli.demo`."""

from pump_keras.cli.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
