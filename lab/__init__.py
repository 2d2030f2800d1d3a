"""The research lab around the learner: the experiment harness, evidence and plots, and the
offline data generators that train (the behaviour SAC). It imports `learner/`; `learner/` never
imports it (tests/test_layout.py)."""
