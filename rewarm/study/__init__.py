"""The study: sweeps of runs (``rewarm sweep``) and their comparison (``rewarm compare``).

Import the submodules directly (``rewarm.study.sweep``, ``rewarm.study.compare``); none of them imports
Lightning at module level.
"""
