"""Generated gRPC stubs of the actor-learner wire format (see protos/README.md)."""
