"""Joint models: every domain is trained together and every domain improves (CMF, DML, DDTCDR,
CoNet, NCF-joint, DisenCDR). Importing this package registers them."""

from cdrec.models.joint.cmf import CMF
from cdrec.models.joint.conet import CoNet
from cdrec.models.joint.ddtcdr import DDTCDR
from cdrec.models.joint.disencdr import DisenCDR
from cdrec.models.joint.dml import DML
from cdrec.models.joint.ncf_joint import NCFJoint

__all__ = ["CMF", "DDTCDR", "DML", "CoNet", "DisenCDR", "NCFJoint"]
