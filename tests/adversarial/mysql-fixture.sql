-- Objects for the resolution corpus (mysql-resolution.toml), loaded by tests/adversarial.rs as the
-- admin into the acme database after the acme fixture and before it is fingerprinted. Statements
-- are sent one at a time: each ends with a line holding only `//`. Those after the `-- @grants`
-- line run once per host of the analyst account ({{analyst}} is `'user'@'host'`); {{database}} is
-- the quoted database name.
--
-- Every piece of planted code notes that it ran in adv_marker; the fingerprint covers it.

CREATE TABLE adv_marker (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(200) NOT NULL) ENGINE = InnoDB
//
CREATE TABLE secrets (id INT PRIMARY KEY, secret VARCHAR(100) NOT NULL) ENGINE = InnoDB
//
INSERT INTO secrets VALUES (1, 'my-secret-1'), (2, 'my-secret-2')
//
-- Stored functions named like built-ins MariaDB 10.11 does not have.
CREATE FUNCTION any_value(x INT) RETURNS INT NOT DETERMINISTIC MODIFIES SQL DATA SQL SECURITY INVOKER
BEGIN
    INSERT INTO adv_marker (note) VALUES ('any_value');
    RETURN x;
END
//
CREATE FUNCTION `grouping`(x INT) RETURNS INT NOT DETERMINISTIC MODIFIES SQL DATA SQL SECURITY INVOKER
BEGIN
    INSERT INTO adv_marker (note) VALUES ('grouping');
    RETURN x;
END
//
CREATE FUNCTION regexp_like(a TEXT, b TEXT) RETURNS INT NOT DETERMINISTIC MODIFIES SQL DATA SQL SECURITY INVOKER
BEGIN
    INSERT INTO adv_marker (note) VALUES ('regexp_like');
    RETURN 1;
END
//
-- A stored function reading a denied table (no built-in of that name).
CREATE FUNCTION adv_peek() RETURNS VARCHAR(200) NOT DETERMINISTIC READS SQL DATA SQL SECURITY INVOKER
    RETURN (SELECT GROUP_CONCAT(secret) FROM secrets)
//
-- Session state: each flips one setting for the rest of the session.
CREATE FUNCTION adv_flip() RETURNS INT NOT DETERMINISTIC SQL SECURITY INVOKER
BEGIN
    SET @@session.tx_read_only = 0;
    RETURN 1;
END
//
CREATE FUNCTION adv_untime() RETURNS INT NOT DETERMINISTIC SQL SECURITY INVOKER
BEGIN
    SET @@session.max_statement_time = 0;
    RETURN 1;
END
//
CREATE FUNCTION adv_lock() RETURNS INT NOT DETERMINISTIC SQL SECURITY INVOKER
    RETURN GET_LOCK('sluice_adv_lock', 0)
//
CREATE FUNCTION adv_bump() RETURNS INT NOT DETERMINISTIC MODIFIES SQL DATA SQL SECURITY INVOKER
BEGIN
    INSERT INTO adv_marker (note) VALUES ('adv_bump');
    RETURN 1;
END
//
-- Views over a denied table (invoices, secrets), nested, and views calling stored functions.
CREATE VIEW v_invoices AS SELECT id, amount FROM invoices
//
CREATE VIEW v_v_invoices AS SELECT id FROM v_invoices
//
CREATE VIEW v_secrets AS SELECT id, secret FROM secrets
//
CREATE VIEW v_join AS SELECT o.id, i.amount FROM orders o JOIN invoices i ON i.order_id = o.id
//
CREATE VIEW v_exists AS SELECT c.id FROM customers c WHERE EXISTS (SELECT 1 FROM secrets s WHERE s.id = c.id)
//
CREATE VIEW v_union AS SELECT name FROM customers UNION ALL SELECT secret FROM secrets
//
CREATE VIEW v_customers AS SELECT id, name FROM customers
//
-- The one view the analyst may not SHOW: its definition is hidden from the service account.
CREATE VIEW v_hidden AS SELECT id, amount FROM invoices
//
CREATE VIEW v_flip AS SELECT adv_flip() AS flipped
//
CREATE VIEW v_peek AS SELECT adv_peek() AS peeked
//
CREATE VIEW v_any AS SELECT any_value(1) AS v
//
-- A MERGE table over two MyISAM tables, one of them denied.
CREATE TABLE mm_open (id INT NOT NULL, note VARCHAR(40) NOT NULL) ENGINE = MyISAM
//
CREATE TABLE mm_secret (id INT NOT NULL, note VARCHAR(40) NOT NULL) ENGINE = MyISAM
//
INSERT INTO mm_open VALUES (1, 'mm-open-row')
//
INSERT INTO mm_secret VALUES (2, 'mm-secret-row')
//
CREATE TABLE mm_all (id INT NOT NULL, note VARCHAR(40) NOT NULL) ENGINE = MRG_MyISAM
    UNION = (mm_open, mm_secret) INSERT_METHOD = LAST
//
CREATE VIEW v_mm AS SELECT id, note FROM mm_all
//
-- Writes with side effects: a trigger copying into a denied table, cascading foreign keys.
CREATE TABLE trig_src (id INT PRIMARY KEY, note VARCHAR(100) NOT NULL) ENGINE = InnoDB
//
INSERT INTO trig_src VALUES (1, 'trig-row')
//
CREATE TABLE trig_secret (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(100) NOT NULL) ENGINE = InnoDB
//
CREATE TRIGGER trig_src_copy AFTER INSERT ON trig_src FOR EACH ROW
    INSERT INTO trig_secret (note) VALUES (NEW.note)
//
CREATE TRIGGER trig_src_copy_upd AFTER UPDATE ON trig_src FOR EACH ROW
    INSERT INTO trig_secret (note) VALUES (NEW.note)
//
CREATE TABLE fk_parent (id INT PRIMARY KEY) ENGINE = InnoDB
//
CREATE TABLE fk_child (id INT PRIMARY KEY, parent_id INT NOT NULL,
    CONSTRAINT fk_child_parent FOREIGN KEY (parent_id) REFERENCES fk_parent (id)
    ON DELETE CASCADE ON UPDATE CASCADE) ENGINE = InnoDB
//
INSERT INTO fk_parent VALUES (1), (2)
//
INSERT INTO fk_child VALUES (1, 1), (2, 2)
//
ANALYZE TABLE secrets PERSISTENT FOR ALL
//
-- @grants
GRANT SELECT ON {{database}}.secrets TO {{analyst}}
//
GRANT SELECT, INSERT, UPDATE, DELETE ON {{database}}.mm_open TO {{analyst}}
//
GRANT SELECT, INSERT, UPDATE, DELETE ON {{database}}.mm_secret TO {{analyst}}
//
GRANT SELECT, INSERT, UPDATE, DELETE ON {{database}}.mm_all TO {{analyst}}
//
GRANT SELECT, INSERT, UPDATE, DELETE ON {{database}}.trig_src TO {{analyst}}
//
GRANT SELECT, INSERT, UPDATE, DELETE ON {{database}}.fk_parent TO {{analyst}}
//
GRANT SELECT ON {{database}}.fk_child TO {{analyst}}
//
GRANT SELECT ON {{database}}.v_invoices TO {{analyst}}
//
GRANT SELECT ON {{database}}.v_v_invoices TO {{analyst}}
//
GRANT SELECT ON {{database}}.v_secrets TO {{analyst}}
//
GRANT SELECT ON {{database}}.v_join TO {{analyst}}
//
GRANT SELECT ON {{database}}.v_exists TO {{analyst}}
//
GRANT SELECT ON {{database}}.v_union TO {{analyst}}
//
GRANT SELECT ON {{database}}.v_customers TO {{analyst}}
//
GRANT SELECT ON {{database}}.v_flip TO {{analyst}}
//
GRANT SELECT ON {{database}}.v_peek TO {{analyst}}
//
GRANT SELECT ON {{database}}.v_any TO {{analyst}}
//
GRANT SELECT ON {{database}}.v_mm TO {{analyst}}
//
GRANT SELECT ON {{database}}.v_hidden TO {{analyst}}
//
-- SHOW VIEW lets the gateway read the definitions (all but v_hidden's).
GRANT SHOW VIEW ON {{database}}.v_invoices TO {{analyst}}
//
GRANT SHOW VIEW ON {{database}}.v_v_invoices TO {{analyst}}
//
GRANT SHOW VIEW ON {{database}}.v_secrets TO {{analyst}}
//
GRANT SHOW VIEW ON {{database}}.v_join TO {{analyst}}
//
GRANT SHOW VIEW ON {{database}}.v_exists TO {{analyst}}
//
GRANT SHOW VIEW ON {{database}}.v_union TO {{analyst}}
//
GRANT SHOW VIEW ON {{database}}.v_customers TO {{analyst}}
//
GRANT SHOW VIEW ON {{database}}.v_flip TO {{analyst}}
//
GRANT SHOW VIEW ON {{database}}.v_peek TO {{analyst}}
//
GRANT SHOW VIEW ON {{database}}.v_any TO {{analyst}}
//
GRANT SHOW VIEW ON {{database}}.v_mm TO {{analyst}}
//
GRANT INSERT ON {{database}}.adv_marker TO {{analyst}}
//
GRANT EXECUTE ON FUNCTION {{database}}.any_value TO {{analyst}}
//
GRANT EXECUTE ON FUNCTION {{database}}.`grouping` TO {{analyst}}
//
GRANT EXECUTE ON FUNCTION {{database}}.regexp_like TO {{analyst}}
//
GRANT EXECUTE ON FUNCTION {{database}}.adv_peek TO {{analyst}}
//
GRANT EXECUTE ON FUNCTION {{database}}.adv_flip TO {{analyst}}
//
GRANT EXECUTE ON FUNCTION {{database}}.adv_untime TO {{analyst}}
//
GRANT EXECUTE ON FUNCTION {{database}}.adv_lock TO {{analyst}}
//
GRANT EXECUTE ON FUNCTION {{database}}.adv_bump TO {{analyst}}
//
