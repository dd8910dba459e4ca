"""Running the detector: the training loop (``train``), its optimizer and schedule (``solver``), checkpoints,
processes (``distributed``), arithmetic (``precision``), stopping before a time limit (``preemption``), the memory
allocator's policy (``allocator``); evaluation (``evaluate``), inference speed (``timing``) and Fig. 4's loss samples
(``loss_samples``) of a trained run."""
