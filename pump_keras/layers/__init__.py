"""Custom Keras layers (attention modules)."""
