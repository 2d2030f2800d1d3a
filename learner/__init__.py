"""The WSRL learner: agents, replay, checkpoints, training loops and the `wsrl` CLI.

Kept import-light on purpose: `learner/__init__.py` imports nothing. The policy network and
action selection the learner trains are the actor's (`actor.networks`, `actor.policy`): the
learner imports `actor/`, never the other way round.
"""
