-- Schedules: a saved export request that the workers run on a cadence, exactly once per
-- tick. The database is what makes it exactly once: a tick is claimed by inserting its
-- (schedule, tick) row, and a run is an ordinary export carrying the same pair under a
-- unique index, so any number of workers, or one killed mid-way, cannot run a tick twice.
CREATE TABLE schedules (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id bigint NOT NULL REFERENCES users (id),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- the folder its deliveries go to under the destination
    slug text NOT NULL CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,59}$'),
    -- the frozen request, as an export's (exports.frozen), taken at the Schedule click
    request jsonb NOT NULL CHECK (jsonb_typeof(request) = 'object'),
    view_name text NOT NULL,
    cadence text NOT NULL CHECK (cadence IN ('every', 'hourly', 'daily', 'weekly')),
    every_minutes integer CHECK (every_minutes BETWEEN 1 AND 1440),
    minute integer CHECK (minute BETWEEN 0 AND 59),
    at_time time CHECK (at_time = date_trunc('minute', at_time)),
    -- ISO weekday less one: 0 Monday … 6 Sunday
    weekday smallint CHECK (weekday BETWEEN 0 AND 6),
    mode text NOT NULL CHECK (mode IN ('full', 'changes')),
    destination text CHECK (destination ~ '^[A-Za-z0-9_-]{1,40}$'),
    notify boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    paused_at timestamptz,
    paused_reason text,
    -- the first tick not yet taken; the ticker takes schedules whose next_tick has passed
    next_tick timestamptz NOT NULL,
    last_tick timestamptz,
    CHECK ((cadence = 'every') = (every_minutes IS NOT NULL)),
    CHECK ((cadence = 'hourly') = (minute IS NOT NULL)),
    CHECK ((cadence IN ('daily', 'weekly')) = (at_time IS NOT NULL)),
    CHECK ((cadence = 'weekly') = (weekday IS NOT NULL)),
    CHECK ((paused_at IS NULL) = (paused_reason IS NULL))
);
CREATE INDEX schedules_owner_idx ON schedules (owner_id, id);
CREATE INDEX schedules_due_idx ON schedules (next_tick) WHERE paused_at IS NULL;

-- One row per tick a schedule took, whatever came of it.
CREATE TABLE schedule_ticks (
    schedule_id bigint NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    tick timestamptz NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('run', 'skipped', 'permission_revoked')),
    export_id uuid REFERENCES export_jobs (id) ON DELETE SET NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_id, tick)
);

ALTER TABLE export_jobs
    ADD COLUMN schedule_id bigint REFERENCES schedules (id) ON DELETE SET NULL,
    -- the tick this run is for; null for a run asked for by hand ("Run now")
    ADD COLUMN schedule_tick timestamptz,
    -- copying a completed run's file to the schedule's destination
    ADD COLUMN delivery_status text
        CHECK (delivery_status IN ('pending', 'delivered', 'delivery_failed')),
    ADD COLUMN delivery_attempts integer NOT NULL DEFAULT 0 CHECK (delivery_attempts >= 0),
    ADD COLUMN delivered_at timestamptz,
    -- whether the owner's message about the run's end was sent (null: none asked for)
    ADD COLUMN notify_status text CHECK (notify_status IN ('pending', 'sent', 'failed'));
CREATE UNIQUE INDEX export_jobs_schedule_tick_key ON export_jobs (schedule_id, schedule_tick);
CREATE INDEX export_jobs_schedule_idx ON export_jobs (schedule_id, requested_at DESC)
    WHERE schedule_id IS NOT NULL;
CREATE INDEX export_jobs_delivery_idx ON export_jobs (id)
    WHERE delivery_status = 'pending' OR notify_status = 'pending';
