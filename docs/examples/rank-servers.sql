-- Ranks servers by the causes of their 502 and 504 answers, over every loaded report
-- (load-reports.sql first). One row per server and cause kind; servers with the most such
-- causes first, servers with as many sharing a rank.
--
-- A cause is a finding that explains 502 or 504 and that no other finding explains: on a
-- capture with both legs of a balancer, the front's 502 is explained by the backend's reset
-- behind it, so the backend is ranked for the reset and the balancer not at all. A finding
-- that explains both statuses (an unanswered SYN: a 504 connect timeout or a 502) counts once.

WITH cause AS (
    SELECT f.capture, f."index", f.kind, f.flow.server AS server, f.time, c.status
    FROM finding AS f, UNNEST(f.causes) AS u(c)
    WHERE c.status IN (502, 504)
      AND coalesce(len(f.explained_by), 0) = 0
),
per_kind AS (
    SELECT server, kind,
           count(DISTINCT (capture, "index")) AS findings,
           list(DISTINCT status ORDER BY status) AS statuses,
           count(DISTINCT capture) AS captures,
           arg_min(capture, time) AS first_capture,
           min(time) AS first_seen
    FROM cause
    GROUP BY server, kind
),
per_server AS (
    SELECT server, server_findings, rank() OVER (ORDER BY server_findings DESC) AS rank
    FROM (
        SELECT server, CAST(sum(findings) AS BIGINT) AS server_findings
        FROM per_kind
        GROUP BY server
    )
)
SELECT s.rank, k.server, s.server_findings, k.kind, k.statuses, k.findings, k.captures,
       k.first_capture, k.first_seen
FROM per_kind AS k JOIN per_server AS s USING (server)
ORDER BY rank, k.server, k.findings DESC, k.kind;
