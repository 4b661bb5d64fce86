-- Interaction store for the embedded `local` profile: the Cassandra tables with the same keys.
-- event_time is epoch milliseconds; context is JSON text.
CREATE TABLE IF NOT EXISTS interactions (
    user_id TEXT NOT NULL,
    event_time INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    item_id TEXT,
    action_type TEXT,
    context TEXT,
    session_id TEXT,
    PRIMARY KEY (user_id, event_time, event_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS item_interactions (
    item_id TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    event_time INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    user_id TEXT,
    action_type TEXT,
    PRIMARY KEY (item_id, bucket, event_time, event_id)
) WITHOUT ROWID;
