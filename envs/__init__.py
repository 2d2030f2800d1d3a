"""Tasks (env + reward convention + offline data) and dataset tools.

Light on purpose: actors import this package to build their environments.
"""
