"""The command-line tools: argparse, printing, exit codes and environment changes live here and nowhere else.

Nothing in the library imports this package.
"""

from pump_keras.cli.log_level import quiet_tensorflow_logs

# TensorFlow reads its log level once, when it is first imported: every
# command imports this package before anything that imports TensorFlow.
quiet_tensorflow_logs()
