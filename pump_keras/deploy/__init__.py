"""Models out: the SavedModel export, local prediction, TFLite, and the TF Serving client."""
