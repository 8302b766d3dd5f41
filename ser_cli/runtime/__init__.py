"""Runtime helpers shared by every stage: errors, devices, seeding, atomic files, checkpoints."""
