-- Catalog schema (PostgreSQL). Idempotent: every statement can run again.
CREATE TABLE IF NOT EXISTS users (
    id BIGSERIAL PRIMARY KEY,
    user_id VARCHAR(128) UNIQUE NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    last_active_at TIMESTAMP WITH TIME ZONE,
    preferred_categories TEXT[],
    language VARCHAR(10),
    country VARCHAR(3),
    engagement_level VARCHAR(20),
    total_interactions INTEGER DEFAULT 0,
    is_new_user BOOLEAN DEFAULT TRUE,
    onboarding_completed BOOLEAN DEFAULT FALSE
);
CREATE INDEX IF NOT EXISTS idx_users_active ON users(last_active_at DESC);
CREATE INDEX IF NOT EXISTS idx_users_engagement ON users(engagement_level);

CREATE TABLE IF NOT EXISTS items (
    id BIGSERIAL PRIMARY KEY,
    item_id VARCHAR(50) UNIQUE NOT NULL,
    title VARCHAR(500) NOT NULL,
    description TEXT,
    category VARCHAR(100),
    subcategory VARCHAR(100),
    tags TEXT[],
    content_features JSONB,
    view_count BIGINT DEFAULT 0,
    interaction_count BIGINT DEFAULT 0,
    avg_rating DECIMAL(3, 2),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    is_active BOOLEAN DEFAULT TRUE,
    is_new_item BOOLEAN DEFAULT TRUE
);
CREATE INDEX IF NOT EXISTS idx_items_category ON items(category, subcategory);
CREATE INDEX IF NOT EXISTS idx_items_popularity ON items(interaction_count DESC);
CREATE INDEX IF NOT EXISTS idx_items_new ON items(created_at DESC) WHERE is_new_item = TRUE;
CREATE INDEX IF NOT EXISTS idx_items_updated ON items(updated_at);  -- what serving's new-items watch reads

CREATE TABLE IF NOT EXISTS precomputed_recommendations (
    user_id VARCHAR(128),
    recommendation_type VARCHAR(50),
    item_id VARCHAR(50),
    rank INTEGER,
    score FLOAT,
    explanation_type VARCHAR(50),
    computed_at TIMESTAMP WITH TIME ZONE,
    expires_at TIMESTAMP WITH TIME ZONE,
    PRIMARY KEY (user_id, recommendation_type, rank)
);
CREATE INDEX IF NOT EXISTS idx_precomputed_expiry ON precomputed_recommendations(expires_at);

-- User ids as long as the API takes (128): a database created with VARCHAR(50) is widened, once.
DO $$
DECLARE
    target RECORD;
BEGIN
    FOR target IN SELECT table_name FROM information_schema.columns
                  WHERE table_schema = current_schema() AND column_name = 'user_id'
                    AND table_name IN ('users', 'precomputed_recommendations') AND character_maximum_length < 128
    LOOP
        EXECUTE format('ALTER TABLE %I ALTER COLUMN user_id TYPE VARCHAR(128)', target.table_name);
    END LOOP;
END $$;
