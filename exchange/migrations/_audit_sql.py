"""SQL of the audit rollups, frozen with the migrations that install it (0012, 0013).

``AuditRollup`` rows are kept by the database itself, in the transaction of every INSERT into the
audit table: a statement trigger on PostgreSQL (over the statement's inserted rows, once per
group commit), a row trigger on SQLite. A record ignored as a duplicate (``ON CONFLICT DO
NOTHING``) fires nothing, so each stored record is counted exactly once, whoever wrote it.

The kinds of shadow divergence are those of ``exchange.services.shadow.REPORT_KINDS`` (they
overlap); a test holds the two equal on both databases.
"""

from __future__ import annotations

ROLLUP = "exchange_auditrollup"
RECORDS = "exchange_exchangerecord"
COLUMNS = (
    "tenant_id, hour, decision, error_code, rule_name, shard, count, last_seen, last_reason, "
    "shadow_count, shadow_deny, shadow_allow, shadow_tags, shadow_other"
)
KEY = "tenant_id, hour, decision, error_code, rule_name, shard"
SHARDS = 8  # PostgreSQL: concurrent writers spread over this many rows per group


def _added(alias: str, excluded: str = "EXCLUDED") -> str:
    sums = ", ".join(
        f"{name} = {alias}{name} + {excluded}.{name}"
        for name in ("count", "shadow_count", "shadow_deny", "shadow_allow", "shadow_tags", "shadow_other")
    )
    return (
        f"{sums}, last_reason = CASE WHEN {excluded}.last_seen >= {alias}last_seen THEN {excluded}.last_reason "
        f"ELSE {alias}last_reason END, last_seen = GREATEST({alias}last_seen, {excluded}.last_seen)"
    )


def postgresql_rollup_add(source: str, *, shard: str, where: str = "") -> str:
    """One statement adding the rows of ``source`` (a table or a transition table) to the rollups."""
    return f"""
INSERT INTO {ROLLUP} AS r ({COLUMNS})
SELECT tenant_id, date_trunc('hour', created_at, 'UTC'), decision, error_code, rule_name, {shard}, count(*),
       max(created_at), (array_agg(reason ORDER BY created_at DESC, id DESC))[1],
       count(*) FILTER (WHERE shadow IS NOT NULL),
       count(*) FILTER (WHERE decision = 'allowed' AND shadow -> 'decision' = '"denied"'),
       count(*) FILTER (WHERE decision = 'denied' AND shadow -> 'decision' = '"allowed"'),
       count(*) FILTER (WHERE shadow -> 'tags_differ' = 'true'),
       count(*) FILTER (WHERE shadow -> 'decision' = '"not evaluated"'
                        OR (decision = 'allowed' AND shadow -> 'decision' = '"allowed"'
                            AND shadow -> 'tags_differ' = 'false')
                        OR (decision = 'denied' AND shadow -> 'decision' = '"denied"'))
FROM {source} {where}
GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
ON CONFLICT ({KEY}) DO UPDATE SET {_added("r.")}"""


POSTGRESQL_TRIGGER = f"""
CREATE OR REPLACE FUNCTION exchange_audit_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
{postgresql_rollup_add("new_records", shard=f"(pg_backend_pid() % {SHARDS})::smallint")};
RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS exchange_audit_rollup ON {RECORDS};
CREATE TRIGGER exchange_audit_rollup AFTER INSERT ON {RECORDS} REFERENCING NEW TABLE AS new_records
FOR EACH STATEMENT EXECUTE FUNCTION exchange_audit_rollup();
"""

# SQLite keeps datetimes as text 'YYYY-MM-DD HH:MM:SS[.ffffff]' in UTC (Django's format), which
# sorts as time does; JSON booleans are told apart with json_type.
_SQLITE_KINDS = {
    "shadow_count": "NEW.shadow IS NOT NULL",
    "shadow_deny": "NEW.decision = 'allowed' AND json_extract(NEW.shadow, '$.decision') = 'denied'",
    "shadow_allow": "NEW.decision = 'denied' AND json_extract(NEW.shadow, '$.decision') = 'allowed'",
    "shadow_tags": "json_type(NEW.shadow, '$.tags_differ') = 'true'",
    "shadow_other": "json_extract(NEW.shadow, '$.decision') = 'not evaluated'"
    " OR (NEW.decision = 'allowed' AND json_extract(NEW.shadow, '$.decision') = 'allowed'"
    " AND json_type(NEW.shadow, '$.tags_differ') = 'false')"
    " OR (NEW.decision = 'denied' AND json_extract(NEW.shadow, '$.decision') = 'denied')",
}

SQLITE_TRIGGER = f"""
CREATE TRIGGER IF NOT EXISTS exchange_audit_rollup AFTER INSERT ON {RECORDS} FOR EACH ROW BEGIN
INSERT INTO {ROLLUP} ({COLUMNS})
VALUES (NEW.tenant_id, strftime('%Y-%m-%d %H:00:00', NEW.created_at), NEW.decision, NEW.error_code, NEW.rule_name, 0, 1,
        NEW.created_at, NEW.reason, {", ".join(f"IFNULL({condition}, 0)" for condition in _SQLITE_KINDS.values())})
ON CONFLICT ({KEY}) DO UPDATE SET {_added("").replace("GREATEST(", "max(")};
END
"""

SQLITE_TRIGGER_DROP = "DROP TRIGGER IF EXISTS exchange_audit_rollup"

# The records already in the table when the trigger is created, counted once (a bare column
# beside max() takes the row of the maximum: SQLite's documented rule).
SQLITE_SEED = f"""
INSERT INTO {ROLLUP} ({COLUMNS})
SELECT tenant_id, strftime('%Y-%m-%d %H:00:00', created_at), decision, error_code, rule_name, 0, count(*),
       max(created_at), reason, {", ".join(f"sum(IFNULL({c.replace('NEW.', '')}, 0))" for c in _SQLITE_KINDS.values())}
FROM {RECORDS} WHERE true
GROUP BY 1, 2, 3, 4, 5
ON CONFLICT ({KEY}) DO UPDATE SET {_added("").replace("GREATEST(", "max(")}
"""
