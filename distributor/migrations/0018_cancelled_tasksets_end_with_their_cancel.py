"""Task-sets that a job's cancel found queued were ended without an
``ended_at`` (those put back after the cancel had one), so exports'
``--since`` took them by their creation. They ended with the cancel: the
job's own ``ended_at``."""

from django.db import migrations
from django.db.models import OuterRef, Subquery


def end_with_their_jobs_cancel(apps, schema_editor):
    Job, TaskSet = apps.get_model("distributor", "Job"), apps.get_model("distributor", "TaskSet")
    cancelled_at = Job.objects.filter(pk=OuterRef("job_id")).values("ended_at")[:1]
    TaskSet.objects.filter(state="cancelled", ended_at__isnull=True).update(ended_at=Subquery(cancelled_at))


class Migration(migrations.Migration):

    dependencies = [
        ('distributor', '0017_host_fault_retries'),
    ]

    operations = [
        # Backwards: nothing to undo; an end time on a cancelled set is right either way.
        migrations.RunPython(end_with_their_jobs_cancel, migrations.RunPython.noop),
    ]
