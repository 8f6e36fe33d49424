"""Speed and quality benchmarks of dcl_cluster: run each as a module from the repository root,
``python -m benchmarks.<name>`` (see docs/benchmarks.md); they write ``benchmarks/results``."""
