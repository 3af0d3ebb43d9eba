"""The distributor's data model: what was submitted (jobs), what ran
(task-sets, tasks, attempts), what came back (events, task-jobs), and who ran
it (targets, machines). The database is the only truth: every state change is
a conditional UPDATE on these rows."""
from distributor.models.config import DistributorConfig
from distributor.models.blobs import Blob, BlobChunk
from distributor.models.targets import Binary, BootImage, JobContent, Target
from distributor.models.jobs import Job, Tally
from distributor.models.tasksets import Attempt, Task, TaskSet
from distributor.models.results import Event, ExitType, TaskJob
from distributor.models.hosts import Host, HostTargetFault
from distributor.models.machines import Fenced, Machine, Orders
from distributor.models.notifications import Notification
from distributor.models.audit import AuditEntry
from distributor.models.etm import Calibration, EtmModel, EtmVersion
from distributor.models.slots import Slot
from distributor.models.summaries import ResultsSummary

__all__ = [
    "Attempt",
    "AuditEntry",
    "Binary",
    "Blob",
    "BlobChunk",
    "Calibration",
    "BootImage",
    "DistributorConfig",
    "EtmModel",
    "EtmVersion",
    "Event",
    "ExitType",
    "Fenced",
    "Host",
    "HostTargetFault",
    "Job",
    "JobContent",
    "Machine",
    "Notification",
    "Orders",
    "ResultsSummary",
    "Slot",
    "Target",
    "Task",
    "TaskJob",
    "TaskSet",
    "Tally",
]
