import psycopg
import redis


def test_redis_fixture_gives_an_empty_database(redis_url):
    r = redis.Redis.from_url(redis_url)
    assert r.dbsize() == 0
    r.set("k", "v")
    assert r.get("k") == b"v"


def test_postgres_fixture_gives_a_fresh_database(database_url):
    with psycopg.connect(database_url) as c:
        assert c.execute("select count(*) from pg_namespace where nspname = 'bsky'").fetchone()[0] == 0
