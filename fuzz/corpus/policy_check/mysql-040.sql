ASELECT 1 AS x -- c
, 2 AS y