"""Benchmarks of issue 7: ours against a peer (torchvision) in one process; ``python -m benchmarks``."""
