"""How a trial is scored: tasks and data, the training objective, the proxy trainer and its recipe, the inherited
parent, the adequacy check, the seed noise and the higher-fidelity reference."""
