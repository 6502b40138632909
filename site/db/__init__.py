"""A site's database: models, connections, migrations and the job store."""
