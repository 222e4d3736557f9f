"""`python -m pump_keras.serving_client`: the entry point of `pump_keras.cli.serving_client`."""

from pump_keras.cli.serving_client import main

if __name__ == "__main__":
    raise SystemExit(main())
