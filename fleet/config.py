"""One typed configuration for every role, read from the environment and env files.

Variable names follow the old pipeline where one existed (``REDIS_URL``, ``DATABASE_URL``,
``INDEXER_BATCH_SIZE``...). An invalid value raises :class:`ConfigError` naming the variable
and the expected form; entry points turn it into exit code 78 (EX_CONFIG).

Every setting is declared once in ``SETTINGS``; ``README.md`` lists them (``python -m
fleet.config`` prints the table).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .shard import parse_shard_set


class ConfigError(Exception):
    """A configuration value is missing or malformed; the message names the variable."""


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    def parse(v: str) -> int:
        n = int(v.strip())
        if lo is not None and n < lo:
            raise ValueError(f"must be >= {lo}")
        if hi is not None and n > hi:
            raise ValueError(f"must be <= {hi}")
        return n

    parse.form = f"an integer{'' if lo is None else f' >= {lo}'}{'' if hi is None else f' <= {hi}'}"  # type: ignore[attr-defined]
    return parse


def _float(lo: float = 0.0) -> Callable[[str], float]:
    def parse(v: str) -> float:
        x = float(v.strip())
        if x < lo:
            raise ValueError(f"must be >= {lo}")
        return x

    parse.form = f"a number >= {lo}"  # type: ignore[attr-defined]
    return parse


def _bool(v: str) -> bool:
    t = v.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("not a boolean")


_bool.form = "true/false (1/0, yes/no, on/off)"  # type: ignore[attr-defined]


def _str(v: str) -> str:
    return v.strip()


_str.form = "a string"  # type: ignore[attr-defined]


def _list(v: str) -> list[str]:
    return [p.strip() for p in v.replace(" ", ",").split(",") if p.strip()]


_list.form = "a comma-separated list"  # type: ignore[attr-defined]


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(v: str) -> str:
        v = v.strip()
        if not any(v.startswith(s + "://") for s in schemes):
            raise ValueError("wrong scheme")
        return v

    parse.form = " or ".join(f"{s}://..." for s in schemes)  # type: ignore[attr-defined]
    return parse


def _choice(*values: str) -> Callable[[str], str]:
    def parse(v: str) -> str:
        v = v.strip().lower()
        if v not in values:
            raise ValueError("not one of the choices")
        return v

    parse.form = ", ".join(values)  # type: ignore[attr-defined]
    return parse


def _cursor(v: str) -> str:
    t = v.strip().lower()
    if t in ("live", ""):
        return "live"
    if int(t) < 0:
        raise ValueError("negative")
    return str(int(t))


_cursor.form = "'live' or a non-negative relay seq"  # type: ignore[attr-defined]


def _ident(v: str) -> str:
    v = v.strip()
    if not v or not (v[0].isalpha() or v[0] == "_") or not all(c.isalnum() or c == "_" for c in v):
        raise ValueError("not an SQL identifier")
    return v


_ident.form = "an SQL identifier (letters, digits, _)"  # type: ignore[attr-defined]


def _role_targets(v: str) -> list[str]:
    items = _list(v)
    for item in items:
        name, sep, target = item.partition("=")
        mod, colon, fn = target.partition(":")
        if not (sep and colon and name and mod and fn):
            raise ValueError(f"{item!r} is not name=module:function")
    return items


_role_targets.form = "a comma-separated list of name=module:function"  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Setting:
    env: str
    parse: Callable[[str], Any]
    default: str
    help: str
    secret: bool = False


SETTINGS: list[Setting] = [
    # connections
    Setting("REDIS_URL", _url("redis", "rediss", "unix"), "redis://127.0.0.1:6379/0", "Redis holding every stream and cursor", secret=True),
    Setting("DATABASE_URL", _url("postgresql", "postgres"), "postgresql://127.0.0.1:5432/postgres", "PostgreSQL the AppView reads", secret=True),
    Setting("DATABASE_SCHEMA", _ident, "bsky", "Postgres schema holding the AppView tables"),
    Setting("DB_POOL_SIZE", _int(1, 100), "4", "connections per process"),
    # fleet shape
    Setting("SHARD_COUNT", _int(1, 4096), "1", "number of indexer shards in the whole fleet (changing it is an operation, see README)"),
    Setting("SHARDS", _str, "all", "the shards this unit or master runs, e.g. 0-3,6 (default: all)"),
    Setting("FLEET_ROLES", _list, "ingester,fetcher,indexer", "roles the master forks"),
    Setting("FLEET_INGESTERS", _int(0, 16), "1", "ingester processes the master forks"),
    Setting("FLEET_FETCHERS", _int(0, 64), "1", "fetcher processes the master forks"),
    # supervision
    Setting("HEARTBEAT_INTERVAL_S", _float(0.05), "1", "how often a child's event loop reports it is turning"),
    Setting("HEARTBEAT_TIMEOUT_S", _float(0.2), "30", "a child whose loop has not turned for this long is killed and restarted"),
    Setting("DRAIN_TIMEOUT_S", _float(0.1), "30", "after SIGTERM, how long children may drain before they are killed"),
    Setting("KILL_TIMEOUT_S", _float(0.1), "5", "after SIGTERM to a stuck child, how long before SIGKILL"),
    Setting("RESTART_BACKOFF_S", _float(0.0), "0.5", "first restart delay of a dead child (doubles, with jitter)"),
    Setting("RESTART_BACKOFF_MAX_S", _float(0.0), "30", "cap of the restart delay"),
    Setting("RESTART_MAX", _int(1), "5", "restarts of one child within RESTART_WINDOW_S that stop the master"),
    Setting("RESTART_WINDOW_S", _float(1.0), "60", "window for RESTART_MAX"),
    Setting("STARTUP_SETTLE_S", _float(0.0), "1", "a child alive this long counts as started (READY=1)"),
    Setting("FLEET_EXTRA_ROLES", _role_targets, "", "testing hook: name=module:function,... (a built-in role name replaces its code; others add one process)"),
    # logs and metrics
    Setting("LOG_LEVEL", _choice("debug", "info", "warning", "error"), "info", "debug, info, warning, error"),
    Setting("LOG_FORMAT", _choice("kv", "json"), "kv", "kv (key=value) or json"),
    Setting("METRICS_HOST", _str, "127.0.0.1", "address metrics listen on"),
    Setting("METRICS_PORT", _int(0, 65535), "9400", "master's metrics port; children use the next ports (0 disables all)"),
    Setting("SUMMARY_INTERVAL_S", _float(1.0), "60", "period of the one-line summary each process logs"),
    # ingester
    Setting("INGESTER_RELAY_HOSTS", _list, "wss://bsky.network", "relays to subscribe to (subscribeRepos)"),
    Setting("INGESTER_LABELER_HOSTS", _list, "", "labelers to subscribe to (subscribeLabels)"),
    Setting("INGESTER_START_CURSOR", _cursor, "live", "first start without a stored cursor: 'live' or a seq"),
    Setting("INGESTER_COLLECTIONS", _list, "app.bsky.*,chat.bsky.*,com.germnetwork.declaration", "collections kept (prefix* or exact NSID); the default is every collection the official indexer handles"),
    Setting("INGESTER_BATCH_SIZE", _int(1), "500", "events per Redis pipeline"),
    Setting("INGESTER_BATCH_MS", _int(1), "50", "longest wait before a partial batch is written"),
    Setting("INGESTER_HIGH_WATER_MARK", _int(1), "200000", "stream length above which the ingester stops reading"),
    Setting("INGESTER_LOW_WATER_MARK", _int(0), "150000", "stream length below which it resumes"),
    Setting("INGESTER_IDLE_TIMEOUT_S", _float(0.1), "60", "a relay connection silent this long is treated as dead"),
    Setting("INGESTER_MAX_FRAME_BYTES", _int(1024), "5000000", "larger WebSocket frames are refused"),
    Setting("INGESTER_RECONNECT_MAX_S", _float(0.0), "60", "cap of the reconnect backoff"),
    Setting("INGESTER_LISTREPOS", _bool, "false", "page through listRepos of each relay into repo_backfill"),
    Setting("INGESTER_LISTREPOS_HOSTS", _list, "", "hosts for listRepos (default: the relays, over https)"),
    # fetcher
    Setting("FETCHER_CONCURRENCY", _int(1, 1000), "8", "repos fetched at once per process"),
    Setting("FETCHER_PER_PDS_CONCURRENCY", _int(1, 1000), "4", "repos fetched at once per PDS"),
    Setting("FETCHER_MAX_CAR_BYTES", _int(1024), "268435456", "larger repos are refused and recorded"),
    Setting("FETCHER_TIMEOUT_S", _float(0.1), "120", "getRepo timeout"),
    Setting("FETCHER_MAX_ATTEMPTS", _int(1), "5", "attempts before a repo is dead-lettered"),
    Setting("FETCHER_VERIFY_SIGNATURES", _bool, "false", "verify commit signatures against the DID's #atproto key"),
    Setting("FETCHER_HIGH_WATER_MARK", _int(1), "200000", "backfill stream length above which fetching pauses"),
    Setting("FETCHER_RECLAIM_IDLE_S", _float(0.1), "60", "repo_backfill entries pending this long (a dead fetcher's) are reclaimed and processed"),
    Setting("FETCHER_RETRY_BACKOFF_S", _float(0.0), "1", "first retry delay of a failed repo (doubles per attempt, with jitter)"),
    Setting("INGESTER_LISTREPOS_PAGE_SIZE", _int(1, 1000), "1000", "listRepos limit per page"),
    Setting("INGESTER_LISTREPOS_MAX_TRIES", _int(1), "5", "tries of one listRepos cursor before it is skipped and recorded"),
    Setting("PLC_URL", _url("http", "https"), "https://plc.directory", "PLC directory for did:plc"),
    Setting("IDENTITY_CACHE_TTL_S", _int(0), "3600", "DID document / handle cache TTL in Redis"),
    Setting("HANDLE_RESOLVER_URL", _str, "", "override for handle resolution: http://host:port serving /.well-known/atproto-did by Host (tests, demo)"),
    # indexer
    Setting("INDEXER_BATCH_SIZE", _int(1, 100000), "500", "stream entries applied per transaction"),
    Setting("INDEXER_BULK", _bool, "true", "multi-row fast path (likes, reposts, follows, blocks, post and profile creates; fleet.indexing.bulk); false = one event at a time"),
    Setting("INDEXER_BATCH_WAIT_MS", _int(0), "100", "block time of XREADGROUP when the stream is empty"),
    Setting("INDEXER_MAX_DELIVERIES", _int(1), "5", "deliveries after which an entry goes to the dead-letter stream"),
    Setting("INDEXER_RESOLVE_HANDLES", _bool, "true", "resolve and verify handles on #identity/#account"),
    Setting("INDEXER_PLAN_CACHE_MODE", _choice("force_generic_plan", "auto", "force_custom_plan"), "force_generic_plan",
            "plan_cache_mode of the indexers' PostgreSQL sessions: plan each prepared statement once (fleet/indexer/main.py)"),
    Setting("INDEXER_SELF_HEAL", _bool, "true", "rewind a consumer group whose waiting entries it can no longer deliver (see fleet/indexer/groupcheck.py)"),
]

_BY_ENV = {s.env: s for s in SETTINGS}


@dataclass(frozen=True)
class Config:
    values: Mapping[str, Any]
    sources: Mapping[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name.upper()]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def shards(self) -> list[int]:
        return parse_shard_set(self.values["SHARDS"], self.values["SHARD_COUNT"])

    def redacted(self) -> dict[str, Any]:
        """Values safe to log: secrets (URLs with credentials) masked."""
        out = {}
        for s in SETTINGS:
            v = self.values[s.env]
            out[s.env] = redact_url(v) if s.secret else v
        return out


def redact_url(url: str) -> str:
    """``postgresql://user:pw@host/db`` -> ``postgresql://user:***@host/db``."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{scheme}://{creds}@{host}"


def read_env_file(path: str) -> dict[str, str]:
    """Parse a systemd-style env file (``KEY=VALUE``, ``#`` comments, optional quotes).

    A file that holds a secret (a URL with a password) must not be readable by group or
    others: that is a configuration error rather than a silent leak.
    """
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"env file {path}: {e.strerror}") from None
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:]
        if "=" not in line:
            raise ConfigError(f"env file {path}:{n}: expected KEY=VALUE")
        k, v = line.split("=", 1)
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
            v = v[1:-1]
        out[k.strip()] = v
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        for k, v in out.items():
            s = _BY_ENV.get(k)
            if s is not None and s.secret and redact_url(v) != v:
                raise ConfigError(
                    f"env file {path} holds a secret ({k}) but is readable by others "
                    f"(mode {stat.S_IMODE(st.st_mode):o}); chmod 600 {path}"
                )
    return out


def load(environ: Mapping[str, str] | None = None, env_files: list[str] | None = None) -> Config:
    """Build the configuration: defaults < env files (in order) < the process environment.

    ``ENV_FILE`` in the environment names extra env files (comma-separated).
    """
    environ = dict(os.environ if environ is None else environ)
    files = list(env_files or []) + _list(environ.get("ENV_FILE", ""))
    merged: dict[str, tuple[str, str]] = {}
    for path in files:
        for k, v in read_env_file(path).items():
            merged[k] = (v, path)
    for k, v in environ.items():
        if k in _BY_ENV:
            merged[k] = (v, "environment")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for s in SETTINGS:
        raw, src = merged.get(s.env, (s.default, "default"))
        try:
            values[s.env] = s.parse(raw)
        except (ValueError, TypeError) as e:
            shown = "***" if s.secret else repr(raw)
            raise ConfigError(
                f"{s.env}={shown} (from {src}) is invalid: expected {getattr(s.parse, 'form', 'a valid value')}"
                + (f" ({e})" if str(e) and not s.secret else "")
            ) from None
        sources[s.env] = src
    cfg = Config(values, sources)
    try:
        cfg.shards
    except ValueError as e:
        raise ConfigError(f"SHARDS={values['SHARDS']!r} is invalid: expected e.g. 0-3,6 within SHARD_COUNT={values['SHARD_COUNT']} ({e})") from None
    if values["INGESTER_LOW_WATER_MARK"] > values["INGESTER_HIGH_WATER_MARK"]:
        raise ConfigError("INGESTER_LOW_WATER_MARK must not exceed INGESTER_HIGH_WATER_MARK")
    return cfg


def markdown_table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        rows.append(f"| `{s.env}` | `{s.default}` | {s.help} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
