-- The indexes exactly as 0002 created them (built on every partition: slow on big tables).
CREATE INDEX api_usage_service_time ON api_usage (service, time_window);
CREATE INDEX api_usage_user_service_time ON api_usage (user_id, service, time_window);
CREATE INDEX ai_analysis_model_time ON ai_analysis (model_type, created_at);
CREATE INDEX ai_analysis_status_time ON ai_analysis (status, created_at);
CREATE INDEX ai_analysis_user_model_time ON ai_analysis (user_id, model_type, created_at);
