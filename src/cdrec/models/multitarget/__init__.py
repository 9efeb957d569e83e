"""Multi-target methods (one model, every domain a target): UCLR and its ablations will live
here, one module each, registered on import."""
