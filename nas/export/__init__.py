"""`python -m nas.export`: the study's front and export policies (front), the model file (cli), proxy fidelity."""
