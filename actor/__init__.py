"""WSRL actors: run an environment, act with the learner's policy, stream transitions.

Import-light by design (checked by a test): jax, flax, numpy, gymnasium, grpc and, from the
learner, only `learner.networks`, `learner.distributions` and `learner.acting`. Never optax,
the losses, the replay buffer or the agents. Submodules: `envs` (task name or gymnasium
entry point), `client` (gRPC with retries), `spool` (on-disk batches), `loop` (the actor),
`robot` (robot mode: fixed rate, background sender, safety; docs/robot.md), `record`.
"""
