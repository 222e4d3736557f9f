"""`python -m pump_keras.train`: the entry point of `pump_keras.cli.train`."""

from pump_keras.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
