"""The audit trail: who did what to which evidence, from where, written with the change itself."""
