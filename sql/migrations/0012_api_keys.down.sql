-- Undoes 0012 API keys exactly (the keys are gone: services must get new ones).
SET LOCAL ROLE pipeline_migrator;

DROP TRIGGER api_keys_audit ON api_keys;
DROP FUNCTION api_keys_audit();
DROP TABLE api_keys;

-- Back to the login running migrations: the runner records this migration as that login.
RESET ROLE;
