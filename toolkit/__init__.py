"""Training side of edgeclf: datasets, training, evaluation, plots and export."""
