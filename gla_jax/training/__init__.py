"""Training: optimizer and schedule, state and fine-tuning, the step, the loop, evaluation."""
