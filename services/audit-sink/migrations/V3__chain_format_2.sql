-- Chain format 2 (see src/chain.rs): a link hashes its record's position and original bytes and, for a stored
-- Avro row, the SHA-256 of the writer schema's definition, no longer every typed column (which repeat the
-- value's content). verify checks each typed column against what the stored value decodes to with that
-- writer schema, so a changed column is still named, and hashing costs ~40 % fewer bytes per link.
--
-- audit.chain.format: the version of each link's canonical bytes. Links written before this migration read as
-- 1 (ADD COLUMN with a constant default rewrites nothing) and keep verifying as version 1; the default is then
-- dropped, so every new link states its version. The version is hashed (its tag), so changing it breaks the link.
ALTER TABLE audit.chain ADD COLUMN format smallint NOT NULL DEFAULT 1 CHECK (format IN (1, 2));
ALTER TABLE audit.chain ALTER COLUMN format DROP DEFAULT;

-- audit.writer_schemas: every Avro writer schema a stored row's value was written with, keyed by the SHA-256
-- of its definition (the registry's id is kept, but a registry rebuilt from scratch may reuse ids), so
-- verify and an auditor decode the stored values without the registry. Append-only like the trail; a changed
-- definition no longer matches the digest the links hashed.
CREATE TABLE audit.writer_schemas (
    digest      bytea       PRIMARY KEY CHECK (length(digest) = 32),
    schema_id   bigint      NOT NULL,
    definition  text        NOT NULL,
    recorded_at timestamptz NOT NULL
);

CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit.writer_schemas
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

REVOKE ALL ON audit.writer_schemas FROM PUBLIC;
GRANT SELECT, INSERT ON audit.writer_schemas TO audit_writer;
