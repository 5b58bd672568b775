"""Archive clients: EMPIAR, EMDB and PDB metadata and resumable, verified downloads."""
