"""Datasets: loaders for real layouts and the synthetic world, the manifest, PIT pairs, torch datasets."""
