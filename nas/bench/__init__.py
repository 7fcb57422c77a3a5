"""Measurement, outside the service's core (run by benchmarks/): recorded learning-curve tables and their replay,
the recipe's four claims and their page."""
