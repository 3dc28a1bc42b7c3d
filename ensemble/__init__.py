"""Stage 4: combine the models' probabilities, tune thresholds, apply and evaluate."""
