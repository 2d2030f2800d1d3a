"""Version 1 of the wire format: `learner_pb2` (messages), `learner_pb2_grpc` (service)."""
