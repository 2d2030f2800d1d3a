"""The WSRL learner: agents, replay, checkpoints, training loops and the `wsrl` CLI.

Kept import-light on purpose: `import learner.networks` must not pull in optax or the
training loops, so that actor machines can build the policy from the same code.
"""
