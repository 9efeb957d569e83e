"""Multi-target methods (one model, every domain a target): UCLR and its ablations (PGE, PGE+AE,
PGE+CL-AE, PGE+UCL-AE), registered on import."""

from cdrec.models.multitarget.uclr import PGE, PGEAE, PGECLAE, PGEUCLAE, UCLR

__all__ = ["PGE", "PGEAE", "PGECLAE", "PGEUCLAE", "UCLR"]
