"""WSRL actors: run an environment, act with the learner's policy, stream transitions.

Import-light by design (checked by a test): jax, flax, numpy, gymnasium, grpc, `envs` and
`protos`, and nothing of `learner/` (the learner imports the actor's policy, never the other
way round). Submodules: `networks` (the policy network), `distributions` (tanh-Gaussian math),
`policy` (jitted action selection), `evaluation` (deterministic evaluation episodes), `envs`
(task name, gymnasium id or entry point; action rescaling), `client` (gRPC with retries),
`spool` (on-disk batches), `loop` (the actor), `robot` (robot mode: the fixed-rate control
loop; docs/robot.md) with `robot_sender` (its spooler and sender threads), `robot_controls`
(pause, resume, e-stop, backlog hold, state reports) and `robot_workspace` (workspace limits),
`teleop` (keyboard and SpaceMouse takeover), `process` (the `wsrl actor` process: loop or
robot, signals), `interrupts` (Ctrl-C handling), `evaluator` (`wsrl actor --evaluate`),
`record` (`wsrl record`).
"""
