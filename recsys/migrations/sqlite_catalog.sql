-- Catalog schema for the embedded `local` profile: the PostgreSQL schema in SQLite types.
-- Arrays and JSON are JSON text; timestamps are ISO 8601 text in UTC.
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT UNIQUE NOT NULL,
    created_at TEXT,
    last_active_at TEXT,
    preferred_categories TEXT,
    language TEXT,
    country TEXT,
    engagement_level TEXT,
    total_interactions INTEGER DEFAULT 0,
    is_new_user INTEGER DEFAULT 1,
    onboarding_completed INTEGER DEFAULT 0
);
CREATE INDEX IF NOT EXISTS idx_users_active ON users(last_active_at DESC);
CREATE INDEX IF NOT EXISTS idx_users_engagement ON users(engagement_level);

CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT UNIQUE NOT NULL,
    title TEXT NOT NULL,
    description TEXT,
    category TEXT,
    subcategory TEXT,
    tags TEXT,
    content_features TEXT,
    view_count INTEGER DEFAULT 0,
    interaction_count INTEGER DEFAULT 0,
    avg_rating REAL,
    created_at TEXT,
    updated_at TEXT,
    is_active INTEGER DEFAULT 1,
    is_new_item INTEGER DEFAULT 1
);
CREATE INDEX IF NOT EXISTS idx_items_category ON items(category, subcategory);
CREATE INDEX IF NOT EXISTS idx_items_popularity ON items(interaction_count DESC);
CREATE INDEX IF NOT EXISTS idx_items_new ON items(created_at DESC) WHERE is_new_item = 1;
CREATE INDEX IF NOT EXISTS idx_items_updated ON items(updated_at);  -- what serving's new-items watch reads

CREATE TABLE IF NOT EXISTS precomputed_recommendations (
    user_id TEXT,
    recommendation_type TEXT,
    item_id TEXT,
    rank INTEGER,
    score REAL,
    explanation_type TEXT,
    computed_at TEXT,
    expires_at TEXT,
    PRIMARY KEY (user_id, recommendation_type, rank)
);
CREATE INDEX IF NOT EXISTS idx_precomputed_expiry ON precomputed_recommendations(expires_at);
