"""Classification probes on cached activations: small transformer, linear (logistic regression), k-NN, and
token-decoded spatial maps (TDSM) with their heads. Modules import torch; import them inside `run`."""
