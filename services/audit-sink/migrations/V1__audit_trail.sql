-- The audit trail and the assessment archive, append-only, hash-chained.
--
-- audit.audit_events        one row per AuditEvent (unique eventId), typed columns + the original record
-- audit.compliance_reports  one row per ComplianceReport (unique reportId), typed columns + the original record
-- audit.chain               one link per consumed record of each (topic, partition): the SHA-256 chain;
--                           a duplicate or rejected record keeps its original bytes here
-- audit.sink_offsets        per (topic, partition): next offset to consume, next chain position and the
--                           chain head; written in the same transaction as the rows, locked while a batch
--                           is stored (the fence against a second instance that believes it owns the partition)
--
-- The writer role audit_writer may INSERT and SELECT the first three and nothing else; a statement trigger
-- refuses UPDATE, DELETE and TRUNCATE on them for every role (a superuser must disable it explicitly).

DO $$
BEGIN
    CREATE ROLE audit_writer NOLOGIN;
EXCEPTION
    -- roles are cluster-wide: another database's migration may have created it, even concurrently
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

CREATE TABLE audit.audit_events (
    event_id        text        PRIMARY KEY,
    occurred_at     timestamptz NOT NULL,
    user_id         text        NOT NULL,
    action          text        NOT NULL,
    resource        text        NOT NULL,
    details         json        NOT NULL,
    ip_address      text,
    user_agent      text,
    session_id      text,
    value_format    text        NOT NULL CHECK (value_format IN ('avro', 'json')),
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    kafka_timestamp timestamptz,
    record_key      bytea,
    record_value    bytea       NOT NULL,
    UNIQUE (topic, kafka_partition, kafka_offset)
);
CREATE INDEX audit_events_occurred_at ON audit.audit_events (occurred_at);
CREATE INDEX audit_events_user ON audit.audit_events (user_id, occurred_at);

CREATE TABLE audit.compliance_reports (
    report_id       text        PRIMARY KEY,
    organization_id text        NOT NULL,
    reported_at     timestamptz NOT NULL,
    report_type     text        NOT NULL,
    risk_score      double precision,
    risk_level      text,
    data            json        NOT NULL,
    version         text        NOT NULL,
    value_format    text        NOT NULL CHECK (value_format IN ('avro', 'json')),
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    kafka_timestamp timestamptz,
    record_key      bytea,
    record_value    bytea       NOT NULL,
    UNIQUE (topic, kafka_partition, kafka_offset)
);
CREATE INDEX compliance_reports_org ON audit.compliance_reports (organization_id, reported_at);

CREATE TABLE audit.chain (
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    seq             bigint      NOT NULL CHECK (seq >= 0),
    kafka_offset    bigint      NOT NULL,
    outcome         text        NOT NULL CHECK (outcome IN ('stored', 'duplicate', 'rejected')),
    entity_id       text,
    reason          text,
    consumed_at     timestamptz NOT NULL,
    -- the original record, for links whose record has no row of its own (duplicate, rejected)
    kafka_timestamp timestamptz,
    record_key      bytea,
    record_value    bytea,
    prev_hash       bytea       NOT NULL CHECK (length(prev_hash) = 32),
    hash            bytea       NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (topic, kafka_partition, seq),
    UNIQUE (topic, kafka_partition, kafka_offset)
);

CREATE TABLE audit.sink_offsets (
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    next_offset     bigint      NOT NULL,
    next_seq        bigint      NOT NULL,
    head_hash       bytea       NOT NULL CHECK (length(head_hash) = 32),
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (topic, kafka_partition)
);

CREATE FUNCTION audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit.% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit.audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit.compliance_reports
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit.chain
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

REVOKE ALL ON ALL TABLES IN SCHEMA audit FROM PUBLIC;
GRANT USAGE ON SCHEMA audit TO audit_writer;
GRANT SELECT, INSERT ON audit.audit_events, audit.compliance_reports, audit.chain TO audit_writer;
GRANT SELECT, INSERT, UPDATE ON audit.sink_offsets TO audit_writer;
-- the service checks the schema version it runs against
GRANT SELECT ON audit.schema_history TO audit_writer;
