"""PrFlashAttention's error at equal compute: experiment.py (run, plot), claims.py, README.md."""
