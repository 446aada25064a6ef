"""The domain schema: salons, their catalogue and calendar, chats, outbox, operations and WhatsApp keys.

YClients ids, scoped by company, are the natural keys of everything synced from YClients, so upserts conflict
on (company_id, id). Clients and bookings can also be born in a chat before YClients knows them, so they have
their own ids and a nullable, unique YClients id.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE OR REPLACE FUNCTION fleet_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE TABLE companies (
    id              bigint PRIMARY KEY CHECK (id > 0),
    title           text NOT NULL CHECK (btrim(title) <> ''),
    city            text,
    timezone_name   text NOT NULL DEFAULT 'Europe/Moscow',
    address         text,
    phone           text,
    is_active       boolean NOT NULL DEFAULT true,
    synced_at       timestamptz,
    deleted_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE service_categories (
    company_id      bigint NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    id              bigint NOT NULL CHECK (id > 0),
    title           text NOT NULL CHECK (btrim(title) <> ''),
    weight          integer NOT NULL DEFAULT 0,
    synced_at       timestamptz,
    deleted_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (company_id, id)
);

CREATE TABLE services (
    company_id      bigint NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    id              bigint NOT NULL CHECK (id > 0),
    category_id     bigint,
    title           text NOT NULL CHECK (btrim(title) <> ''),
    price_min       numeric(12, 2) NOT NULL DEFAULT 0 CHECK (price_min >= 0),
    price_max       numeric(12, 2) NOT NULL DEFAULT 0 CHECK (price_max >= 0),
    duration_seconds integer NOT NULL DEFAULT 3600 CHECK (duration_seconds > 0 AND duration_seconds <= 86400),
    comment         text,
    weight          integer NOT NULL DEFAULT 0,
    active          boolean NOT NULL DEFAULT true,
    synced_at       timestamptz,
    deleted_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (company_id, id),
    FOREIGN KEY (company_id, category_id) REFERENCES service_categories (company_id, id),
    CHECK (price_max = 0 OR price_max >= price_min)
);
CREATE INDEX services_category_idx ON services (company_id, category_id) WHERE deleted_at IS NULL;

CREATE TABLE staff (
    company_id      bigint NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    id              bigint NOT NULL CHECK (id > 0),
    name            text NOT NULL CHECK (btrim(name) <> ''),
    specialization  text,
    position_title  text,
    avatar_url      text,
    fired           boolean NOT NULL DEFAULT false,
    hidden          boolean NOT NULL DEFAULT false,
    service_ids     bigint[] NOT NULL DEFAULT '{}',
    synced_at       timestamptz,
    deleted_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (company_id, id)
);

CREATE TABLE staff_schedules (
    company_id      bigint NOT NULL,
    staff_id        bigint NOT NULL,
    date            date NOT NULL,
    slots           jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(slots) = 'array'),
    busy_intervals  jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(busy_intervals) = 'array'),
    off_day         boolean NOT NULL DEFAULT false,
    synced_at       timestamptz,
    deleted_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (company_id, staff_id, date),
    FOREIGN KEY (company_id, staff_id) REFERENCES staff (company_id, id) ON DELETE CASCADE
);
CREATE INDEX staff_schedules_date_idx ON staff_schedules (company_id, date);

CREATE TABLE clients (
    id              bigserial PRIMARY KEY,
    company_id      bigint NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    yclients_id     bigint CHECK (yclients_id > 0),
    name            text,
    phone           text CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    email           text,
    discount        numeric(5, 2) NOT NULL DEFAULT 0 CHECK (discount >= 0 AND discount <= 100),
    first_visit_at  timestamptz,
    last_visit_at   timestamptz,
    sold_amount     numeric(14, 2) NOT NULL DEFAULT 0,
    visits_count    integer NOT NULL DEFAULT 0 CHECK (visits_count >= 0),
    synced_at       timestamptz,
    deleted_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (company_id, yclients_id)
);
CREATE INDEX clients_phone_idx ON clients (company_id, phone) WHERE deleted_at IS NULL;
CREATE INDEX clients_name_idx ON clients (company_id, lower(name));

CREATE TABLE bookings (
    id              bigserial PRIMARY KEY,
    company_id      bigint NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    yclients_id     bigint CHECK (yclients_id > 0),
    client_id       bigint REFERENCES clients (id) ON DELETE SET NULL,
    staff_id        bigint NOT NULL,
    service_id      bigint,
    services        jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(services) = 'array'),
    starts_at       timestamptz NOT NULL,
    ends_at         timestamptz NOT NULL,
    status          text NOT NULL DEFAULT 'confirmed'
                    CHECK (status IN ('waiting', 'confirmed', 'came', 'no_show', 'cancelled')),
    source          text NOT NULL DEFAULT 'yclients' CHECK (source IN ('yclients', 'assistant')),
    comment         text,
    changed_at      timestamptz,
    synced_at       timestamptz,
    deleted_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (company_id, yclients_id),
    FOREIGN KEY (company_id, staff_id) REFERENCES staff (company_id, id),
    FOREIGN KEY (company_id, service_id) REFERENCES services (company_id, id),
    CHECK (ends_at > starts_at),
    CONSTRAINT bookings_no_double_booking EXCLUDE USING gist (
        company_id WITH =, staff_id WITH =, tstzrange(starts_at, ends_at) WITH &&
    ) WHERE (status <> 'cancelled' AND deleted_at IS NULL)
);
CREATE INDEX bookings_client_idx ON bookings (client_id, starts_at);
CREATE INDEX bookings_changed_idx ON bookings (company_id, changed_at);

CREATE TABLE dialog_contexts (
    company_id      bigint NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    chat_id         text NOT NULL CHECK (btrim(chat_id) <> ''),
    client_id       bigint REFERENCES clients (id) ON DELETE SET NULL,
    state           text NOT NULL DEFAULT 'idle',
    data            jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),
    last_seq        bigint NOT NULL DEFAULT 0,
    answered_seq    bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (company_id, chat_id)
);

CREATE TABLE messages (
    id                  bigserial PRIMARY KEY,
    company_id          bigint NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    chat_id             text NOT NULL,
    gateway_message_id  text NOT NULL CHECK (btrim(gateway_message_id) <> ''),
    chat_seq            bigint NOT NULL CHECK (chat_seq > 0),
    body                text NOT NULL,
    media               jsonb,
    sent_at             timestamptz NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT now(),
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'answered', 'merged', 'failed')),
    attempts            integer NOT NULL DEFAULT 0,
    answered_at         timestamptz,
    outbox_id           bigint,
    error               text,
    UNIQUE (company_id, gateway_message_id),
    UNIQUE (company_id, chat_id, chat_seq)
);
CREATE INDEX messages_pending_idx ON messages (company_id, chat_id, chat_seq) WHERE status = 'pending';
CREATE INDEX messages_received_idx ON messages (received_at) WHERE status = 'pending';

CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    company_id      bigint NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    chat_id         text NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    body            text NOT NULL CHECK (body <> ''),
    message_ids     bigint[] NOT NULL DEFAULT '{}',
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);
CREATE INDEX outbox_pending_idx ON outbox (next_attempt_at) WHERE status = 'pending';
ALTER TABLE messages ADD FOREIGN KEY (outbox_id) REFERENCES outbox (id) ON DELETE SET NULL;

CREATE TABLE dead_letters (
    id              bigserial PRIMARY KEY,
    source          text NOT NULL,
    reason          text NOT NULL,
    error_type      text,
    company_id      bigint,
    reference       text,
    payload         jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_source_idx ON dead_letters (source, created_at DESC);

CREATE TABLE sync_runs (
    id              bigserial PRIMARY KEY,
    company_id      bigint NOT NULL,
    entity          text NOT NULL,
    mode            text NOT NULL DEFAULT 'full' CHECK (mode IN ('full', 'incremental')),
    status          text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    pages           integer NOT NULL DEFAULT 0,
    rows_fetched    integer NOT NULL DEFAULT 0,
    rows_upserted   integer NOT NULL DEFAULT 0,
    rows_marked_deleted integer NOT NULL DEFAULT 0,
    rows_rejected   integer NOT NULL DEFAULT 0,
    rejections      jsonb NOT NULL DEFAULT '[]',
    cursor          jsonb,
    error           text
);
CREATE INDEX sync_runs_latest_idx ON sync_runs (company_id, entity, started_at DESC);

CREATE TABLE backups (
    id              bigserial PRIMARY KEY,
    status          text NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'verified', 'failed', 'pruned')),
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    verified_at     timestamptz,
    path            text,
    offsite_path    text,
    size_bytes      bigint CHECK (size_bytes >= 0),
    sha256          text CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    pg_dump_version text,
    server_version  text,
    table_counts    jsonb,
    error           text
);
CREATE INDEX backups_verified_idx ON backups (finished_at DESC) WHERE status = 'verified';

CREATE TABLE health_checks (
    id              bigserial PRIMARY KEY,
    check_name      text NOT NULL,
    subject         text NOT NULL DEFAULT '',
    status          text NOT NULL CHECK (status IN ('healthy', 'warning', 'unhealthy')),
    details         jsonb NOT NULL DEFAULT '{}',
    checked_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX health_checks_latest_idx ON health_checks (check_name, subject, checked_at DESC);

-- The two WhatsApp tables keep the gateway's own layout: the gateway writes them, the fleet reads and prunes.
CREATE TABLE whatsapp_auth (
    company_id      text PRIMARY KEY,
    creds           jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE whatsapp_keys (
    company_id      text NOT NULL,
    key_type        text NOT NULL,
    key_id          text NOT NULL,
    value           jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    PRIMARY KEY (company_id, key_type, key_id)
);
CREATE INDEX whatsapp_keys_type_updated_idx ON whatsapp_keys (key_type, updated_at);
CREATE INDEX whatsapp_keys_expires_idx ON whatsapp_keys (key_type, expires_at);
"""

TOUCHED_TABLES = (
    "companies",
    "service_categories",
    "services",
    "staff",
    "staff_schedules",
    "clients",
    "bookings",
    "dialog_contexts",
)

DOWNGRADE = """
DROP TABLE IF EXISTS whatsapp_keys, whatsapp_auth, health_checks, backups, sync_runs, dead_letters,
    messages, outbox, dialog_contexts, bookings, clients, staff_schedules, staff, services,
    service_categories, companies CASCADE;
DROP FUNCTION IF EXISTS fleet_touch_updated_at();
"""


def upgrade() -> None:
    op.execute(UPGRADE)
    for table in TOUCHED_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_touch_updated_at BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION fleet_touch_updated_at()"
        )


def downgrade() -> None:
    op.execute(DOWNGRADE)
