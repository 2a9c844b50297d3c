-- Vinted sales are read by the seller's extension: a `sync_sales` task belongs to an account, not
-- to a listing. Failed attempts back off. A job that ended on a failed task lets go of it.

ALTER TABLE plugin_tasks ALTER COLUMN product_id DROP NOT NULL,
                         ALTER COLUMN listing_id DROP NOT NULL;
ALTER TABLE plugin_tasks DROP CONSTRAINT plugin_tasks_action_check;
ALTER TABLE plugin_tasks ADD CONSTRAINT plugin_tasks_action_check
    CHECK (action IN ('create_listing', 'update_listing', 'delete_listing', 'sync_sales'));
ALTER TABLE plugin_tasks ADD CONSTRAINT plugin_tasks_listing_check
    CHECK ((action = 'sync_sales') = (listing_id IS NULL));

-- One open sales sync per account: the scheduler's ticks join it while the extension is away.
CREATE UNIQUE INDEX plugin_tasks_open_account_idx ON plugin_tasks (account_id, action)
    WHERE listing_id IS NULL AND state IN ('pending', 'leased');

-- A pending task is not leased before this (set after a failed attempt: the backoff).
ALTER TABLE plugin_tasks ADD COLUMN available_at timestamptz NOT NULL DEFAULT now();

-- Jobs that ended dead on this task's failure: run again (a retry), they start a fresh task.
ALTER TABLE plugin_tasks ADD COLUMN released_job_ids bigint[] NOT NULL DEFAULT '{}';
