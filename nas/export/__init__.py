"""`python -m nas.export`: the study's front and export policies (front), the command and model file (command),
proxy fidelity (fidelity)."""
