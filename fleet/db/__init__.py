"""PostgreSQL: schema migrations, connection pools, canonical dumps."""
