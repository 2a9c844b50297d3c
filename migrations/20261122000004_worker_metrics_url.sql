-- Where each worker process serves its Prometheus metrics (found by the dashboard and scrapers).
ALTER TABLE workers ADD COLUMN metrics_url text;
