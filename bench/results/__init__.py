"""Result rows: the CSV columns (`columns`), provenance, the safe store, typed loading (`load`) and the pure row builder (`row`)."""
