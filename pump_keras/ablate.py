"""`python -m pump_keras.ablate`: the entry point of `pump_keras.cli.ablate`."""

from pump_keras.cli.ablate import main

if __name__ == "__main__":
    raise SystemExit(main())
