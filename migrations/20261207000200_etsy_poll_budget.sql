-- Budget-aware Etsy polling orders shops by how long since each kind of poll: receipts use
-- last_poll_at; this is the listings poll's own.
ALTER TABLE marketplace_accounts ADD COLUMN last_listings_poll_at timestamptz;
