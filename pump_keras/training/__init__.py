"""Training: the paper's recipe, run directories, resumable epochs, distribution."""
