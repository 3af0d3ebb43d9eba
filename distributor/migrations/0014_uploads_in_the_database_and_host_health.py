"""Issue 18: uploaded content moves into the database (Blob, BlobChunk), where
every host reads it, and hosts get a drain flag and faults per target.

Existing uploads are moved in: each Binary and BootImage file under
MEDIA_ROOT is streamed into chunks (a chunk at a time) before the ``file``
column goes. A row whose file is missing or no longer matches its checksum
keeps its row; its content is absent, which a machine reports as a host
fault naming the upload ("upload it again"). The files themselves are left
where they were: delete DATA_DIR/uploads once the migration has run.
"""
import hashlib
from pathlib import Path

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

CHUNK_BYTES = 1 << 20


def move_uploads_into_the_database(apps, schema_editor):
    Blob, BlobChunk = apps.get_model("distributor", "Blob"), apps.get_model("distributor", "BlobChunk")
    for model_name in ("Binary", "BootImage"):
        for row in apps.get_model("distributor", model_name).objects.exclude(file=""):
            path = Path(settings.MEDIA_ROOT) / row.file.name
            if Blob.objects.filter(pk=row.sha256).exists() or not path.is_file() or _sha256(path) != row.sha256:
                continue
            blob = Blob.objects.create(sha256=row.sha256, size=path.stat().st_size)
            with path.open("rb") as handle:
                for index, chunk in enumerate(iter(lambda: handle.read(CHUNK_BYTES), b"")):
                    BlobChunk.objects.create(blob=blob, index=index, data=chunk)


def store_chunks_uncompressed(apps, schema_editor):
    """PostgreSQL: chunks are stored out of line without trying to compress
    them (images and binaries hardly compress; the attempt costs CPU on every
    upload)."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE distributor_blobchunk ALTER COLUMN data SET STORAGE EXTERNAL")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Migration(migrations.Migration):

    dependencies = [
        ('distributor', '0013_job_notify_bad'),
    ]

    operations = [
        migrations.CreateModel(
            name='Blob',
            fields=[
                ('sha256', models.CharField(max_length=64, primary_key=True, serialize=False)),
                ('size', models.PositiveBigIntegerField()),
                ('stored_at', models.DateTimeField(auto_now_add=True)),
            ],
        ),
        migrations.AddField(
            model_name='host',
            name='drained',
            field=models.BooleanField(default=False),
        ),
        migrations.CreateModel(
            name='BlobChunk',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('index', models.PositiveIntegerField()),
                ('data', models.BinaryField()),
                ('blob', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='chunk_rows', to='distributor.blob')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('blob', 'index'), name='one_chunk_per_index')],
            },
        ),
        migrations.RunPython(store_chunks_uncompressed, migrations.RunPython.noop),
        migrations.RunPython(move_uploads_into_the_database, migrations.RunPython.noop),
        migrations.RemoveField(
            model_name='binary',
            name='file',
        ),
        migrations.RemoveField(
            model_name='bootimage',
            name='file',
        ),
        migrations.CreateModel(
            name='HostTargetFault',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('host', models.CharField(max_length=63)),
                ('cause', models.TextField()),
                ('seen_at', models.DateTimeField()),
                ('target', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='host_faults', to='distributor.target')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('host', 'target'), name='one_fault_per_host_and_target')],
            },
        ),
    ]
