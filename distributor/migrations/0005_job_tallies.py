"""A job's counts of ended task-sets move from its own row to one tally row
per counting machine, so that machines storing results never queue for the
job's row (distributor.models.jobs.Tally). Existing counts become counter 0."""

import django.db.models.deletion
from django.db import migrations, models


def counts_to_tallies(apps, schema_editor):
    Job, Tally = apps.get_model("distributor", "Job"), apps.get_model("distributor", "Tally")
    Tally.objects.bulk_create(
        Tally(job_id=job_id, counter=0, finished=finished, bad=bad)
        for job_id, finished, bad in Job.objects.values_list("id", "finished_count", "bad_count").iterator()
        if finished or bad
    )


def tallies_to_counts(apps, schema_editor):
    Job, Tally = apps.get_model("distributor", "Job"), apps.get_model("distributor", "Tally")
    for job_id, finished, bad in Tally.objects.values("job_id").annotate(
        f=models.Sum("finished"), b=models.Sum("bad")
    ).values_list("job_id", "f", "b"):
        Job.objects.filter(pk=job_id).update(finished_count=finished, bad_count=bad)


class Migration(migrations.Migration):

    dependencies = [
        ('distributor', '0004_fewer_indexes'),
    ]

    operations = [
        migrations.CreateModel(
            name='Tally',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('counter', models.BigIntegerField()),
                ('finished', models.BigIntegerField(default=0)),
                ('bad', models.BigIntegerField(default=0)),
                ('job', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='tallies', to='distributor.job')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('job', 'counter'), name='one_tally_per_counter')],
            },
        ),
        migrations.RunPython(counts_to_tallies, tallies_to_counts),
        migrations.AlterModelOptions(
            name='job',
            options={'base_manager_name': 'objects'},
        ),
        migrations.RemoveField(
            model_name='job',
            name='bad_count',
        ),
        migrations.RemoveField(
            model_name='job',
            name='finished_count',
        ),
    ]
