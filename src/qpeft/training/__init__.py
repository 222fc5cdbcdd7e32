"""Training one method: the Trainer loop (``trainer``), its CSV log (``train_log``), the validation
loss (``validation``) and the checkpoints it resumes from (``checkpoints``)."""
