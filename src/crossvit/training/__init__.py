"""Training runs: the run loop and its steps (trainer.py), what a run is built from (setup.py), one
training step and evaluation (engine.py), checkpoints (state.py), processes (distributed.py), curves
(plots.py), and what a time-limited run should reach (expectation.py). The run config they read is
crossvit.runconfig. Nothing is imported here, so that importing one of them loads only what it needs."""
