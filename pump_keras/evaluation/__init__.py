"""How good a model is: metrics, scoring and the threshold, baselines, the verdict, plots and the report."""
