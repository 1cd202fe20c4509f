"""Training: one recipe per method over transformers/PEFT/TRL, and the callbacks around the loop."""
