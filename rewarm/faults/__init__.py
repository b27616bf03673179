"""Faults and hostile input: weights-only checkpoint loads, a full disk at checkpoint time, non-finite steps."""
