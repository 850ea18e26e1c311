BWITH RECURSIVE chain AS (
  SELECT id, manager_id, 1 AS depth FROM sales_reps WHERE manager_id IS NULL
  UNION ALL
  SELECT s.id, s.manager_id, c.depth + 1 FROM sales_reps s JOIN chain c ON s.manager_id = c.id
)
SELECT depth, count(*) FROM chain GROUP BY depth ORDER BY depth