-- 0012 API keys: who may send events over HTTP (issue 16), and for which organization.
--
-- A key is shown once, when it is created (`pipeline keys create`); PostgreSQL keeps only
-- the SHA-256 of it. Keys are 256-bit random secrets, so a fast hash is enough: there is
-- nothing to guess that a slow hash would protect. `key_id` (the key's public prefix)
-- finds the row without scanning; the hash then proves the secret.
--
-- Rows are never deleted: a revoked key stays, so that the audit trail and `keys list`
-- can say who had access when. Owned by pipeline_migrator like every object (0006).
SET LOCAL ROLE pipeline_migrator;

CREATE TABLE api_keys (
    key_id          text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{12}$'),
    key_sha256      bytea NOT NULL CHECK (octet_length(key_sha256) = 32),
    organization_id text NOT NULL CHECK (organization_id <> '' AND length(organization_id) <= 128),
    name            text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text NOT NULL DEFAULT session_user,
    -- Written at most once a minute per key by the HTTP servers (not per request).
    last_used_at    timestamptz,
    revoked_at      timestamptz,
    revoked_by      text
);

COMMENT ON TABLE api_keys IS
    'HTTP ingestion keys: SHA-256 of each key (never the key), its organization, '
    'creation, last use and revocation. Rows are kept after revocation.';

-- `keys list --organization ORG`: an operator looks at one tenant's keys.
CREATE INDEX api_keys_organization ON api_keys (organization_id);

-- Creation and revocation are security events: record them in audit_trail (0009's
-- pipeline_audit), without the hash and without last-use updates (one per minute per
-- key would drown the trail).
CREATE FUNCTION api_keys_audit() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    fields jsonb := jsonb_build_object('key_id', NEW.key_id,
                                       'organization_id', NEW.organization_id,
                                       'name', NEW.name,
                                       'revoked_at', NEW.revoked_at);
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pipeline_audit('api_key.created', 'api_key', NEW.key_id, NULL, fields);
    ELSIF OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL THEN
        PERFORM pipeline_audit('api_key.revoked', 'api_key', NEW.key_id,
                               fields || jsonb_build_object('revoked_at', NULL), fields);
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION api_keys_audit() IS
    'Trigger function: records API key creation and revocation in audit_trail.';

CREATE TRIGGER api_keys_audit AFTER INSERT OR UPDATE OF revoked_at ON api_keys
    FOR EACH ROW EXECUTE FUNCTION api_keys_audit();

-- The HTTP servers authenticate as pipeline_writer: they read keys and stamp last use.
-- `pipeline keys` runs as an operator login (the migrator, or a writer login).
GRANT SELECT, INSERT, UPDATE ON api_keys TO pipeline_writer;

-- Back to the login running migrations: the runner records this migration as that login.
RESET ROLE;
