"""A distributed custom training loop for MultiWorkerMirroredStrategy (placeholder, see run_epoch)."""

from __future__ import annotations


def run_epoch(model, strategy, train_batches, val_batches, epoch, config) -> dict:
    """Trains one epoch under `strategy`; returns the epoch's logs like `fit` (not implemented yet)."""
    raise NotImplementedError("multi-worker training is not implemented yet")


def predict_logits(model, dataset, strategy):
    """Logits of every clip of an unshuffled dataset under `strategy` (not implemented yet)."""
    raise NotImplementedError("multi-worker prediction is not implemented yet")
