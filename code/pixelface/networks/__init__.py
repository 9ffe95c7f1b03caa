"""The networks and their losses: layers, GCMF, generator, discriminator, text encoder, checkpoints."""
