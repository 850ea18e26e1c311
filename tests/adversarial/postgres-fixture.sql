-- Objects for the resolution corpus (postgres-resolution.toml), loaded by tests/adversarial.rs as the
-- admin after the acme fixture and before the database is fingerprinted. Placeholders (quoted
-- identifiers, but {{power}} bare: it also stands inside a string literal): {{analyst}} (the acme
-- analyst), {{lib}} (a second service account whose own search_path is `lib`), {{power}} (a role
-- {{lib}} may SET ROLE to), {{trap}} (an account whose search_path is `trap, pg_catalog`).
--
-- Every piece of planted user code notes that it ran in public.adv_marker (through
-- public.adv_note, which swallows the read-only error so that code reached inside a read-only
-- transaction still returns its marker). The fingerprint covers adv_marker, so code that ran in
-- a read-write transaction shows there; code that ran read-only shows in its answer (LEAK:… or
-- HIJACKED), which no case expects.

CREATE TABLE public.adv_marker (id bigserial PRIMARY KEY, note text NOT NULL);

CREATE FUNCTION public.adv_note(what pg_catalog.text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO public.adv_marker (note) VALUES (what);
    RETURN true;
EXCEPTION WHEN read_only_sql_transaction THEN
    RETURN false;
END $$;

-- A harmless twin of lib.secrets: which one a statement read shows in its rows.
CREATE TABLE public.secrets (id int PRIMARY KEY, secret text NOT NULL);
INSERT INTO public.secrets VALUES (1, 'public-harmless');

-- Planted in public, the analyst account's own search path: a better overload of a built-in and
-- names the static allow-list has but PostgreSQL 15 does not.
CREATE FUNCTION public.upper(v varchar) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM public.adv_note('public.upper'); RETURN 'HIJACKED'; END $$;
CREATE FUNCTION public.uuidv7() RETURNS uuid LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM public.adv_note('public.uuidv7'); RETURN '00000000-0000-0000-0000-00000000beef'; END $$;
CREATE FUNCTION public.any_value(v anyelement) RETURNS anyelement LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM public.adv_note('public.any_value'); RETURN v; END $$;

-- Views over a table the acme cases deny (invoices).
CREATE VIEW public.v_invoices AS SELECT id, amount FROM public.invoices;
CREATE VIEW public.v_v_invoices AS SELECT id FROM public.v_invoices;
CREATE VIEW public.v_stats AS SELECT tablename, most_common_vals::text AS vals FROM pg_catalog.pg_stats;

-- ---------------------------------------------------------------------------------------------
-- lib: the second service account's own schema

CREATE SCHEMA lib;

CREATE TABLE lib.secrets (id int PRIMARY KEY, secret text NOT NULL);
INSERT INTO lib.secrets VALUES (1, 'lib-secret-1'), (2, 'lib-secret-2');

CREATE TABLE lib.members (id int PRIMARY KEY, name text NOT NULL, tier varchar(10) NOT NULL);
INSERT INTO lib.members VALUES (1, 'ann', 'GOLD'), (2, 'bob', 'Silver'), (3, 'cy', 'GOLD');

-- Like members, but with no user-defined cast on its row type.
CREATE TABLE lib.clubs (id int PRIMARY KEY, title text NOT NULL);
INSERT INTO lib.clubs VALUES (1, 'chess'), (2, 'go');

-- Named like catalogue relations: pg_notes is not one, pg_class is.
CREATE TABLE lib.pg_notes (id int PRIMARY KEY, note text NOT NULL);
INSERT INTO lib.pg_notes VALUES (1, 'lib-pg-notes');
CREATE TABLE lib.pg_class (id int PRIMARY KEY);
INSERT INTO lib.pg_class VALUES (42);

-- Readable by {{power}} only.
CREATE TABLE lib.strict (id int PRIMARY KEY, secret text NOT NULL);
INSERT INTO lib.strict VALUES (1, 'strict-secret');

-- Inheritance: ev_parent <- ev_open <- ev_grand, ev_parent <- ev_secret.
CREATE TABLE lib.ev_parent (id int NOT NULL, kind text NOT NULL, payload text NOT NULL);
CREATE TABLE lib.ev_open () INHERITS (lib.ev_parent);
CREATE TABLE lib.ev_secret () INHERITS (lib.ev_parent);
CREATE TABLE lib.ev_grand () INHERITS (lib.ev_open);
INSERT INTO lib.ev_parent VALUES (1, 'parent', 'parent-row');
INSERT INTO lib.ev_open VALUES (2, 'open', 'open-row');
INSERT INTO lib.ev_secret VALUES (3, 'secret', 'ev-secret-row');
INSERT INTO lib.ev_grand VALUES (4, 'grand', 'ev-grand-row');

-- Partitions: pay <- pay_open, pay_secret, pay_more <- (pay_more_open, pay_deep).
CREATE TABLE lib.pay (id int NOT NULL, region text NOT NULL, amount numeric NOT NULL)
    PARTITION BY LIST (region);
CREATE TABLE lib.pay_open PARTITION OF lib.pay FOR VALUES IN ('open');
CREATE TABLE lib.pay_secret PARTITION OF lib.pay FOR VALUES IN ('secret');
CREATE TABLE lib.pay_more PARTITION OF lib.pay FOR VALUES IN ('more', 'deep')
    PARTITION BY LIST (region);
CREATE TABLE lib.pay_more_open PARTITION OF lib.pay_more FOR VALUES IN ('more');
CREATE TABLE lib.pay_deep PARTITION OF lib.pay_more FOR VALUES IN ('deep');
INSERT INTO lib.pay VALUES (1, 'open', 10), (2, 'secret', 999), (3, 'more', 5), (4, 'deep', 777);

-- The marker functions. Each notes that it ran and returns something no case expects.
CREATE FUNCTION lib.note_secrets(what text) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM public.adv_note(what);
    RETURN 'LEAK:' || (SELECT pg_catalog.string_agg(secret, ',') FROM lib.secrets);
END $$;

-- Attribute notation: m.member_marker is member_marker(m).
CREATE FUNCTION lib.member_marker(m lib.members) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
BEGIN RETURN lib.note_secrets('member_marker'); END $$;
CREATE FUNCTION lib.club_marker(c lib.clubs) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
BEGIN RETURN lib.note_secrets('club_marker'); END $$;

-- A user-defined cast of a row type, and of an enum used by a column.
CREATE FUNCTION lib.leak(m lib.members) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
BEGIN RETURN lib.note_secrets('cast members as text'); END $$;
CREATE CAST (lib.members AS text) WITH FUNCTION lib.leak(lib.members);
CREATE TYPE lib.level AS ENUM ('bronze', 'gold');
CREATE FUNCTION lib.level_leak(l lib.level) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
BEGIN RETURN lib.note_secrets('cast level as text'); END $$;
CREATE CAST (lib.level AS text) WITH FUNCTION lib.level_leak(lib.level);
CREATE TABLE lib.badges (id int PRIMARY KEY, level lib.level NOT NULL);
INSERT INTO lib.badges VALUES (1, 'gold'), (2, 'bronze');

-- User-defined operators: on row types, and a better match for varchar || varchar.
CREATE FUNCTION lib.member_plus(m lib.members, n int) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
BEGIN RETURN lib.note_secrets('members + int'); END $$;
CREATE OPERATOR lib.+ (LEFTARG = lib.members, RIGHTARG = int, FUNCTION = lib.member_plus);
CREATE FUNCTION lib.club_plus(c lib.clubs, n int) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
BEGIN RETURN lib.note_secrets('clubs + int'); END $$;
CREATE OPERATOR lib.+ (LEFTARG = lib.clubs, RIGHTARG = int, FUNCTION = lib.club_plus);
CREATE FUNCTION lib.vc_cat(a varchar, b varchar) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM lib.note_secrets('varchar || varchar'); RETURN 'HIJACKED'; END $$;
CREATE OPERATOR lib.|| (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = lib.vc_cat);

-- Overloads that match better than the built-in, and names PostgreSQL 15 lacks.
CREATE FUNCTION lib.lower(v varchar) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM lib.note_secrets('lib.lower'); RETURN 'HIJACKED'; END $$;
CREATE FUNCTION lib.length(v varchar) RETURNS int LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM lib.note_secrets('lib.length'); RETURN 999; END $$;
CREATE FUNCTION lib.round(v integer) RETURNS int LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM lib.note_secrets('lib.round'); RETURN -1; END $$;
CREATE FUNCTION lib.uuidv7() RETURNS uuid LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM lib.note_secrets('lib.uuidv7'); RETURN '00000000-0000-0000-0000-00000000beef'; END $$;
CREATE FUNCTION lib.any_value(v anyelement) RETURNS anyelement LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM lib.note_secrets('lib.any_value'); RETURN v; END $$;
CREATE FUNCTION lib.member_count() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM lib.note_secrets('member_count'); RETURN 0; END $$;

-- Session state: each flips one setting for the rest of the session.
CREATE FUNCTION lib.flip_ro() RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT pg_catalog.set_config('default_transaction_read_only', 'off', false) $$;
CREATE FUNCTION lib.flip_tx() RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT pg_catalog.set_config('transaction_read_only', 'off', false) $$;
CREATE FUNCTION lib.flip_path() RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT pg_catalog.set_config('search_path', 'lib, public', false) $$;
CREATE FUNCTION lib.flip_role() RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT pg_catalog.set_config('role', '{{power}}', false) $$;
CREATE FUNCTION lib.flip_timeout() RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT pg_catalog.set_config('statement_timeout', '0', false) $$;
CREATE FUNCTION lib.flip_all() RETURNS text LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_catalog.set_config('default_transaction_read_only', 'off', false);
    PERFORM pg_catalog.set_config('search_path', 'lib, public', false);
    PERFORM pg_catalog.set_config('standard_conforming_strings', 'off', false);
    PERFORM pg_catalog.set_config('statement_timeout', '0', false);
    RETURN 'flipped';
END $$;
CREATE FUNCTION lib.grab_lock() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM pg_catalog.pg_advisory_lock(4242); RETURN true; END $$;
-- Writes without swallowing the read-only error.
CREATE FUNCTION lib.bump() RETURNS int LANGUAGE plpgsql VOLATILE AS $$
BEGIN INSERT INTO public.adv_marker (note) VALUES ('lib.bump'); RETURN 1; END $$;
CREATE FUNCTION lib.escape() RETURNS int LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_catalog.set_config('transaction_read_only', 'off', true);
    INSERT INTO public.adv_marker (note) VALUES ('lib.escape');
    RETURN 1;
END $$;

-- Views over denied tables, views calling user code, views over catalogue side channels.
CREATE VIEW lib.v_secrets AS SELECT id, secret FROM lib.secrets;
CREATE VIEW lib.v_v_secrets AS SELECT id, secret FROM lib.v_secrets;
CREATE VIEW lib.v_v_v_secrets AS SELECT id FROM lib.v_v_secrets WHERE id > 0;
CREATE MATERIALIZED VIEW lib.mv_secrets AS SELECT id, secret FROM lib.secrets;
CREATE VIEW lib.v_mv_secrets AS SELECT id FROM lib.mv_secrets;
CREATE VIEW lib.v_join AS
    SELECT m.name, s.secret FROM lib.members m JOIN lib.secrets s ON s.id = m.id;
CREATE VIEW lib.v_exists AS
    SELECT m.name FROM lib.members m WHERE EXISTS (SELECT 1 FROM lib.secrets s WHERE s.id = m.id);
CREATE VIEW lib.v_union AS SELECT name FROM lib.members UNION ALL SELECT secret FROM lib.secrets;
CREATE VIEW lib.v_members AS SELECT id, name FROM lib.members;
CREATE VIEW lib.v_v_members AS SELECT name FROM lib.v_members;
CREATE VIEW lib.v_pay AS SELECT id, amount FROM lib.pay;
CREATE VIEW lib.v_ev AS SELECT id, payload FROM lib.ev_parent;
CREATE VIEW lib.v_public AS SELECT id, name FROM public.customers;
-- pg_authid, pg_statistic, pg_largeobject and pg_class are pinned catalogues: PostgreSQL records
-- no pg_depend entry for a view's reference to them.
CREATE VIEW lib.v_roles AS SELECT rolname FROM pg_catalog.pg_authid;
CREATE VIEW lib.v_statistic AS SELECT starelid, stanullfrac FROM pg_catalog.pg_statistic;
CREATE VIEW lib.v_largeobject AS SELECT loid, pageno FROM pg_catalog.pg_largeobject;
CREATE VIEW lib.v_class AS SELECT relname FROM pg_catalog.pg_class;
CREATE VIEW lib.v_stats AS SELECT tablename, most_common_vals::text AS vals FROM pg_catalog.pg_stats;
CREATE VIEW lib.v_note AS SELECT public.adv_note('v_note') AS noted;
CREATE VIEW lib.v_flip AS SELECT lib.flip_ro() AS flipped;
CREATE VIEW lib.v_bump AS SELECT lib.bump() AS bumped;

-- Row-level security whose policy calls a user function.
CREATE FUNCTION lib.rls_ok(id int) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM public.adv_note('rls_ok'); RETURN true; END $$;
CREATE TABLE lib.rls_t (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO lib.rls_t VALUES (1, 'rls-row');
ALTER TABLE lib.rls_t ENABLE ROW LEVEL SECURITY;
CREATE POLICY rls_t_all ON lib.rls_t USING (lib.rls_ok(id));

-- Writes with side effects the statement does not show.
CREATE FUNCTION lib.audit_copy() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO lib.secrets VALUES (100 + NEW.id, NEW.v); RETURN NEW; END $$;
CREATE TABLE lib.audited (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO lib.audited VALUES (1, 'audited-row');
CREATE TRIGGER audited_copy AFTER INSERT OR UPDATE OR DELETE ON lib.audited
    FOR EACH ROW EXECUTE FUNCTION lib.audit_copy();
CREATE TABLE lib.parents (id int PRIMARY KEY);
CREATE TABLE lib.kids (id int PRIMARY KEY,
    parent_id int NOT NULL REFERENCES lib.parents (id) ON DELETE CASCADE ON UPDATE CASCADE);
INSERT INTO lib.parents VALUES (1), (2);
INSERT INTO lib.kids VALUES (1, 1), (2, 2);
CREATE TABLE lib.ruled (id int PRIMARY KEY, v text NOT NULL);
CREATE RULE ruled_copy AS ON INSERT TO lib.ruled DO ALSO INSERT INTO lib.secrets VALUES (NEW.id + 200, NEW.v);
CREATE RULE ruled_wipe AS ON DELETE TO lib.ruled DO ALSO DELETE FROM lib.secrets;
CREATE TABLE lib.defaulted (id int PRIMARY KEY, noted boolean DEFAULT public.adv_note('default'));
CREATE FUNCTION lib.imm_len(v text) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN RETURN pg_catalog.length(v); END $$;
CREATE TABLE lib.generated (id int PRIMARY KEY, v text NOT NULL,
    n int GENERATED ALWAYS AS (lib.imm_len(v)) STORED);
CREATE DOMAIN lib.short_text AS text CHECK (lib.imm_len(VALUE) < 100);
CREATE TABLE lib.domained (id int PRIMARY KEY, v lib.short_text NOT NULL);
CREATE TABLE lib.checked (id int PRIMARY KEY, v text NOT NULL CHECK (lib.imm_len(v) < 100));

ANALYZE lib.secrets;
ANALYZE lib.members;

-- ---------------------------------------------------------------------------------------------
-- ext: pg_trgm, with user objects planted beside it; kv: hstore

CREATE SCHEMA ext;
CREATE EXTENSION pg_trgm SCHEMA ext;
CREATE SCHEMA kv;
CREATE EXTENSION hstore SCHEMA kv;
CREATE FUNCTION ext.lower(v varchar) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM lib.note_secrets('ext.lower'); RETURN 'HIJACKED'; END $$;
CREATE FUNCTION ext.show_trgm(v varchar) RETURNS text[] LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM lib.note_secrets('ext.show_trgm'); RETURN ARRAY['HIJACKED']; END $$;
CREATE FUNCTION ext.vc_cat(a varchar, b varchar) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM lib.note_secrets('ext varchar || varchar'); RETURN 'HIJACKED'; END $$;
CREATE OPERATOR ext.|| (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = ext.vc_cat);

-- ---------------------------------------------------------------------------------------------
-- trap: an account whose own search path puts a user schema before pg_catalog, where a domain
-- named `text` runs user code whenever something casts to unqualified `text`.

CREATE SCHEMA trap;
CREATE FUNCTION public.adv_trap(v pg_catalog.text) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO public.adv_marker (note) VALUES ('trap:' || v);
    RETURN true;
EXCEPTION WHEN read_only_sql_transaction THEN
    RETURN true;
END $$;
CREATE DOMAIN trap.text AS pg_catalog.text CHECK (public.adv_trap(VALUE));
CREATE TABLE trap.items (id int PRIMARY KEY, v pg_catalog.text NOT NULL);
INSERT INTO trap.items VALUES (1, 'trap-item');
-- Leaves an SQL-level prepared statement in the session.
CREATE FUNCTION trap.prep() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN EXECUTE 'PREPARE adv_sneaky AS SELECT 1'; RETURN true; END $$;

-- ---------------------------------------------------------------------------------------------
-- Grants: the database's own grants let every attack through; only the gateway stands in the way.

ALTER ROLE {{lib}} SET search_path = lib;
-- {{lib}} may SET ROLE {{power}} but does not inherit its privileges (lib.strict).
ALTER ROLE {{lib}} NOINHERIT;
ALTER ROLE {{trap}} SET search_path = trap, pg_catalog;
GRANT {{power}} TO {{lib}};
GRANT USAGE ON SCHEMA public, lib, ext, kv TO {{lib}}, {{trap}};
GRANT USAGE ON SCHEMA ext, kv TO {{analyst}};
GRANT USAGE ON SCHEMA trap TO {{trap}};
GRANT USAGE ON SCHEMA lib TO {{power}};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA lib TO {{lib}};
REVOKE ALL ON lib.strict FROM {{lib}};
GRANT SELECT ON lib.strict TO {{power}};
GRANT SELECT ON public.secrets, public.customers, public.v_invoices, public.v_v_invoices,
    public.v_stats TO {{lib}};
GRANT SELECT ON public.v_invoices, public.v_v_invoices, public.v_stats TO {{analyst}};
GRANT SELECT ON trap.items TO {{trap}};
GRANT INSERT ON public.adv_marker TO {{analyst}}, {{lib}}, {{trap}}, {{power}};
GRANT USAGE ON SEQUENCE public.adv_marker_id_seq TO {{analyst}}, {{lib}}, {{trap}}, {{power}};
