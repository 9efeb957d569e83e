"""Joint models: every domain is trained together and every domain improves (CMF; later DML,
CoNet, DDTCDR, NCF-joint). Importing this package registers them."""

from cdrec.models.joint.cmf import CMF

__all__ = ["CMF"]
