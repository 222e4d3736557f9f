"""`python -m pump_keras.predict`: the entry point of `pump_keras.cli.predict`."""

from pump_keras.cli.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
