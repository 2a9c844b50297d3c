-- Fleet-wide marketplace rate limits and circuit breakers (jobs/src/limits.rs). Every worker
-- process asks these rows before each marketplace request, so the limits hold for the fleet
-- whatever the number of processes. Times come from the database clock (clock_timestamp()), one
-- clock for every process.

-- One row per limiter key: 'etsy:app:<keystring>', 'ebay:app:<client_id>:<api>',
-- 'vinted:seller:<account>' … The per-second budget is a GCRA whose slots are handed out as
-- reservations: `tat` is the next free slot; a caller gets a slot at most a horizon ahead and sleeps
-- until it, so a dead process strands at most that horizon of slots.
CREATE TABLE rate_limits (
    key            text PRIMARY KEY,
    marketplace    text        NOT NULL,
    -- Next free per-second slot (GCRA theoretical arrival time).
    tat            timestamptz NOT NULL DEFAULT '-infinity',
    -- The limits last applied (from config, lowered by what the marketplace announced), kept
    -- here so GET /v1/limits shows what the workers enforce.
    per_second     double precision NOT NULL DEFAULT 0,
    per_window     integer     NOT NULL DEFAULT 0,
    window_ms      bigint      NOT NULL DEFAULT 0,
    -- Limits the marketplace announced (x-limit-per-second × utilisation / x-limit-per-day)
    -- when lower than configured.
    announced_per_second double precision,
    announced_per_window integer,
    -- Retry-After or a spent quota reported by the marketplace: nothing goes out before this.
    blocked_until  timestamptz,
    blocked_reason text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- The long window (a day, an hour) as 24 buckets per window: a key's use is the sum of the
-- buckets that overlap the window plus one more, so the count never undercuts the marketplace's
-- sliding window.
CREATE TABLE rate_limit_buckets (
    key    text    NOT NULL,
    bucket bigint  NOT NULL,
    n      integer NOT NULL,
    PRIMARY KEY (key, bucket)
);

-- One row per marketplace once it has failed: closed → open (consecutive failures reached the
-- threshold) → half_open (one probe allowed at next_probe_at) → closed on success, open again
-- (longer) on failure.
CREATE TABLE circuit_breakers (
    marketplace   text PRIMARY KEY,
    state         text        NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open', 'half_open')),
    failures      integer     NOT NULL DEFAULT 0,
    opened_at     timestamptz,
    next_probe_at timestamptz,
    open_ms       bigint      NOT NULL DEFAULT 0,
    last_error    text,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Takes one request's budget for `p_key`, atomically. Returns granted with the wait (ms) until the
-- reserved slot, or refused with the wait until the budget returns and why
-- ('circuit_open', 'blocked', 'quota', 'rate'). `probe` says the request is the half-open probe.
CREATE FUNCTION rate_limit_acquire(
    p_key text, p_marketplace text, p_per_second double precision, p_per_window integer,
    p_window_ms bigint, p_horizon_ms bigint, p_probe_ms bigint)
RETURNS TABLE (granted boolean, wait_ms bigint, reason text, probe boolean, used integer,
               circuit_failures integer)
LANGUAGE plpgsql AS $$
DECLARE
    r rate_limits%ROWTYPE;
    c circuit_breakers%ROWTYPE;
    now_ts timestamptz;
    now_ms bigint;
    rate double precision;
    lim integer;
    bucket_ms bigint;
    cur bigint;
    oldest bigint;
    slot timestamptz;
    is_probe boolean := false;
    n_used integer := 0;
BEGIN
    -- The circuit first: while open, only one probe per probe interval goes out.
    SELECT * INTO c FROM circuit_breakers WHERE marketplace = p_marketplace;
    IF FOUND AND c.state <> 'closed' THEN
        SELECT * INTO c FROM circuit_breakers WHERE marketplace = p_marketplace FOR UPDATE;
        now_ts := clock_timestamp();
        IF c.state <> 'closed' THEN
            IF now_ts < c.next_probe_at THEN
                RETURN QUERY SELECT false, ceil(extract(epoch FROM c.next_probe_at - now_ts) * 1000)::bigint,
                                    'circuit_open'::text, false, 0, c.failures;
                RETURN;
            END IF;
            UPDATE circuit_breakers SET state = 'half_open', updated_at = now_ts,
                   next_probe_at = now_ts + p_probe_ms * interval '1 millisecond'
             WHERE marketplace = p_marketplace;
            is_probe := true;
        END IF;
    END IF;

    SELECT * INTO r FROM rate_limits WHERE key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO rate_limits (key, marketplace) VALUES (p_key, p_marketplace) ON CONFLICT DO NOTHING;
        SELECT * INTO r FROM rate_limits WHERE key = p_key FOR UPDATE;
    END IF;
    now_ts := clock_timestamp();
    now_ms := (extract(epoch FROM now_ts) * 1000)::bigint;

    IF r.blocked_until IS NOT NULL AND r.blocked_until > now_ts THEN
        RETURN QUERY SELECT false, ceil(extract(epoch FROM r.blocked_until - now_ts) * 1000)::bigint,
                            'blocked'::text, is_probe, 0, coalesce(c.failures, 0);
        RETURN;
    END IF;

    lim := p_per_window;
    IF r.announced_per_window IS NOT NULL AND (lim = 0 OR r.announced_per_window < lim) THEN
        lim := r.announced_per_window;
    END IF;
    IF lim > 0 AND p_window_ms > 0 THEN
        bucket_ms := greatest(p_window_ms / 24, 1);
        cur := now_ms / bucket_ms;
        SELECT coalesce(sum(b.n), 0), min(b.bucket) INTO n_used, oldest
          FROM rate_limit_buckets b WHERE b.key = p_key AND b.bucket >= cur - 24;
        IF n_used >= lim THEN
            -- Budget returns when the oldest counted bucket leaves the window (+ one bucket).
            RETURN QUERY SELECT false, greatest((oldest + 25) * bucket_ms - now_ms, 1), 'quota'::text,
                                is_probe, n_used, coalesce(c.failures, 0);
            RETURN;
        END IF;
    END IF;

    rate := p_per_second;
    IF r.announced_per_second IS NOT NULL AND (rate = 0 OR r.announced_per_second < rate) THEN
        rate := r.announced_per_second;
    END IF;
    slot := greatest(r.tat, now_ts);
    IF rate > 0 THEN
        IF slot - now_ts > p_horizon_ms * interval '1 millisecond' THEN
            RETURN QUERY SELECT false,
                   greatest(ceil(extract(epoch FROM slot - now_ts) * 1000)::bigint - p_horizon_ms, 1),
                   'rate'::text, is_probe, n_used, coalesce(c.failures, 0);
            RETURN;
        END IF;
        UPDATE rate_limits SET tat = slot + (1000.0 / rate) * interval '1 millisecond',
               per_second = rate, per_window = lim, window_ms = p_window_ms, updated_at = now_ts
         WHERE key = p_key;
    ELSIF r.per_second <> rate OR r.per_window <> lim OR r.window_ms <> p_window_ms THEN
        UPDATE rate_limits SET per_second = rate, per_window = lim, window_ms = p_window_ms, updated_at = now_ts
         WHERE key = p_key;
    END IF;
    IF lim > 0 AND p_window_ms > 0 THEN
        -- Counted when it will be sent (its slot), which is when the marketplace counts it.
        INSERT INTO rate_limit_buckets (key, bucket, n)
            VALUES (p_key, (extract(epoch FROM slot) * 1000)::bigint / bucket_ms, 1)
            ON CONFLICT (key, bucket) DO UPDATE SET n = rate_limit_buckets.n + 1;
        DELETE FROM rate_limit_buckets WHERE key = p_key AND bucket < cur - 25;
        n_used := n_used + 1;
    END IF;
    RETURN QUERY SELECT true, greatest(ceil(extract(epoch FROM slot - now_ts) * 1000)::bigint, 0),
                        'granted'::text, is_probe, n_used, coalesce(c.failures, 0);
END $$;
