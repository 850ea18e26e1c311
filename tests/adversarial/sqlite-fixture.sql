-- Objects for the resolution corpus (sqlite-resolution.toml), added by tests/adversarial.rs to the
-- acme SQLite file before it is fingerprinted (the fingerprint hashes every table, shadow tables
-- included).

-- FTS5, its shadow tables (notes_fts_data, _idx, _content, _docsize, _config) hold its text.
CREATE VIRTUAL TABLE notes_fts USING fts5(title, body);
INSERT INTO notes_fts (title, body) VALUES
    ('plan', 'fts-secret-merger-plan'),
    ('memo', 'fts-secret-layoffs');

-- An external-content FTS5 table over a denied table: its index holds that table's words.
CREATE TABLE secret_notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
INSERT INTO secret_notes (id, body) VALUES (1, 'ext-secret-one'), (2, 'ext-secret-two');
CREATE VIRTUAL TABLE secret_fts USING fts5(body, content='secret_notes', content_rowid='id');
INSERT INTO secret_fts (secret_fts) VALUES ('rebuild');

-- FTS4 (old_fts_content, _segments, _segdir, _docsize, _stat) and an R*Tree (zones_node,
-- _rowid, _parent).
CREATE VIRTUAL TABLE old_fts USING fts4(body);
INSERT INTO old_fts (body) VALUES ('fts4-secret-body');
-- Vocabulary tables: virtual tables that list the words of another FTS table.
CREATE VIRTUAL TABLE notes_vocab USING fts5vocab('notes_fts', 'row');
CREATE VIRTUAL TABLE old_vocab USING fts4aux(old_fts);
CREATE VIRTUAL TABLE zones USING rtree(id, minx, maxx, miny, maxy);
INSERT INTO zones VALUES (1, 0, 10, 0, 10), (2, 5, 15, 5, 15);

-- A plain table that merely looks like a shadow table of a plain table.
CREATE TABLE memo (id INTEGER PRIMARY KEY, v TEXT NOT NULL);
INSERT INTO memo VALUES (1, 'memo-row');
CREATE TABLE memo_content (id INTEGER PRIMARY KEY, v TEXT NOT NULL);
INSERT INTO memo_content VALUES (1, 'memo-content-row');

-- Views over denied tables, nested, over a virtual table and over a shadow table.
CREATE VIEW v_invoices AS SELECT id, amount FROM invoices;
CREATE VIEW v_v_invoices AS SELECT id FROM v_invoices;
CREATE VIEW v_join AS SELECT o.id, i.amount FROM orders o JOIN invoices i ON i.order_id = o.id;
CREATE VIEW v_exists AS SELECT c.id FROM customers c WHERE EXISTS (SELECT 1 FROM secret_notes s WHERE s.id = c.id);
CREATE VIEW v_union AS SELECT name FROM customers UNION ALL SELECT body FROM secret_notes;
CREATE VIEW v_notes AS SELECT title, body FROM notes_fts;
CREATE VIEW v_content AS SELECT * FROM notes_fts_content;
CREATE VIEW v_customers AS SELECT id, name FROM customers;

-- Writes with side effects: a trigger copying into a denied table, cascading foreign keys,
-- a view with an INSTEAD OF trigger writing a denied table.
CREATE TABLE trig_src (id INTEGER PRIMARY KEY, note TEXT NOT NULL);
INSERT INTO trig_src VALUES (1, 'trig-row');
CREATE TRIGGER trig_src_copy AFTER INSERT ON trig_src BEGIN
    INSERT INTO secret_notes (body) VALUES (new.note);
END;
CREATE TRIGGER trig_src_copy_upd AFTER UPDATE ON trig_src BEGIN
    INSERT INTO secret_notes (body) VALUES (new.note);
END;
CREATE TABLE fk_parent (id INTEGER PRIMARY KEY);
CREATE TABLE fk_child (id INTEGER PRIMARY KEY,
    parent_id INTEGER NOT NULL REFERENCES fk_parent (id) ON DELETE CASCADE ON UPDATE CASCADE);
INSERT INTO fk_parent VALUES (1), (2);
INSERT INTO fk_child VALUES (1, 1), (2, 2);
CREATE VIEW v_writable AS SELECT id, body FROM secret_notes;
CREATE TRIGGER v_writable_insert INSTEAD OF INSERT ON v_writable BEGIN
    INSERT INTO secret_notes (body) VALUES (new.body);
END;

ANALYZE;
