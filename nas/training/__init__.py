"""Parts of `nas.train` (spec, loop, checkpoint) and `nas.export` (front and policies, proxy fidelity)."""
