"""Recordings on disk: indexing, splitting, synthetic generation, tf.data."""
