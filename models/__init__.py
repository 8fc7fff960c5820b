"""Training-time code (PyTorch): binary layers, recipes, the model zoo."""
