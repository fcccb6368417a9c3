-- Loads lbdiag's JSON Lines reports (`lbdiag analyze --format jsonl`) into DuckDB.
-- Run it from the directory that holds reports/*.jsonl:
--   duckdb fleet.duckdb < load-reports.sql
-- The record types share a file but not a shape (a capture's `packets` is a count, a
-- finding's a list of frames), so each line is read as one JSON value first and each type is
-- then given its own columns. docs/report-formats.md lists the fields.

CREATE OR REPLACE TABLE record AS
SELECT json ->> 'type' AS type, json ->> 'capture' AS capture, json
FROM read_ndjson_objects('reports/*.jsonl');

CREATE OR REPLACE TABLE capture AS
SELECT r.capture, c.*
FROM (
    SELECT capture, json_transform(json, '{
        "format": "VARCHAR", "compressed": "BOOLEAN", "packets": "UBIGINT", "bytes": "UBIGINT",
        "first_timestamp": "TIMESTAMPTZ", "last_timestamp": "TIMESTAMPTZ",
        "connections": "UBIGINT", "truncated": "BOOLEAN", "error": "VARCHAR",
        "verdict": "VARCHAR", "warnings": ["VARCHAR"]
    }') AS c
    FROM record
    WHERE type = 'capture'
) AS r;

-- `index` is a finding's position in its own run's report: (capture, index) is the key.
-- `explained_by` and `explains` hold the indexes of the findings behind it and in front of it
-- (a balancer's 502 on the front leg is explained by the backend's reset on the back leg).
CREATE OR REPLACE TABLE finding AS
SELECT r.capture, f.*
FROM (
    SELECT capture, json_transform(json, '{
        "index": "INTEGER", "kind": "VARCHAR", "severity": "VARCHAR", "leg": "VARCHAR",
        "flow": {"client": "VARCHAR", "server": "VARCHAR", "filter": "VARCHAR"},
        "packets": ["UBIGINT"], "time": "TIMESTAMPTZ", "summary": "VARCHAR",
        "causes": [{"status": "INTEGER", "upstream_status": "VARCHAR",
                    "explanation": "VARCHAR", "next_steps": ["VARCHAR"]}],
        "explained_by": ["INTEGER"], "explains": ["INTEGER"], "evidence": "JSON"
    }') AS f
    FROM record
    WHERE type = 'finding'
) AS r;
