-- Long-polling extensions: a task that becomes pending (new, or back after a failed attempt)
-- notifies channel stoflow_plugin_tasks with its account id, so an API process holding that
-- account's `GET /api/plugin/tasks?wait=…` answers at once instead of at the next poll.
CREATE FUNCTION plugin_task_wakeup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('stoflow_plugin_tasks', NEW.account_id::text);
    RETURN NULL;
END $$;

CREATE TRIGGER plugin_task_wakeup AFTER INSERT OR UPDATE OF state ON plugin_tasks
    FOR EACH ROW WHEN (NEW.state = 'pending') EXECUTE FUNCTION plugin_task_wakeup();
