"""Data layer: the HDF5 store (schema, writer, reader, fingerprint), SynthSal, importers, the scenario."""
