"""In-context linear regression with multi-head softmax attention (He, Pan, Chen, Yang 2025):
data.py, estimators.py, model.py, reduced.py, patterns.py, experiment.py (run, plot),
claims.py, README.md."""
