"""Offline evaluation: estimators, counterfactual replay, feature importance, jobs."""
