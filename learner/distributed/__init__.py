"""The distributed actor-learner: gRPC learner server, training thread and commands.

`commands` is what `learner.cli` calls (`add_commands`, `run_command`); the commands' arguments
are in `arguments`, `wsrl learner` in `learner_command` (the run it serves in `serving`, its
launch settings in `launch`), `wsrl actor` in `actor_command`, `wsrl run` in `local_run` (its
child processes in `children`), `wsrl status` and pause/resume/estop in `operator_commands`;
the server in `server` (its RPC handlers in `service`, tokens in `auth`, published policies
in `policy_store`, heap trimming in `memory`), the training thread in `trainer` with its jobs
in `ledger` (exactly-once submissions), `pacing` (sync lead, UTD cap), `episode_reports`,
`command_queue` (robot state reports and operator commands) and `learner_state` (saves,
`--resume`); the server's knobs in `settings`, batch validation in `validation`.
Import-light: the submodules import jax and the agents only where they need them.
"""
