"""Parts of the main trainer `python -m nas.train`: its spec, training loop and checkpoints."""
