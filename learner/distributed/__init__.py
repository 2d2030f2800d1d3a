"""The distributed actor-learner: gRPC learner server, training thread and commands.

`wsrl learner`, `wsrl actor`, `wsrl run` and `wsrl status` live in `commands`; the server in
`server`, the training loop in `trainer`, batch validation in `validation`. Import-light: the
submodules import jax and the agents only where they need them.
"""
