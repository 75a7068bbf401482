-- Security events (src/audit/): logins, client authentication failures, throttling, refresh-token
-- reuse, revocations, key changes and admin changes. Written in batches off the request path and
-- deleted after AUDIT_RETENTION_DAYS. Never a password, secret or token: a token is named by its
-- jti, and a username typed at login only as a keyed hash (username_hash).
create table audit_events (
  id              bigint generated always as identity primary key,
  -- The application's clock at the moment of the event, not the time of the batched insert.
  occurred_at     timestamptz not null,
  type            text not null,
  -- The client's network address (request.ip), for events that come from a request.
  address         text,
  -- The client the event concerns (for an admin change: the client changed).
  client_id       text,
  -- For admin changes and admin revocations: the client whose bearer token made the call.
  admin_client_id text,
  -- No foreign keys: the record outlives the user or client it names.
  user_id         text,
  username        text,
  username_hash   text,
  -- json, not jsonb: kept as written, so the fields read in the order they were recorded.
  details         json not null default '{}'
);
create index audit_events_occurred_at on audit_events (occurred_at, id);
create index audit_events_type on audit_events (type, occurred_at);
create index audit_events_client_id on audit_events (client_id, occurred_at) where client_id is not null;
create index audit_events_admin_client_id on audit_events (admin_client_id, occurred_at) where admin_client_id is not null;
create index audit_events_user_id on audit_events (user_id, occurred_at) where user_id is not null;
create index audit_events_username_hash on audit_events (username_hash, occurred_at) where username_hash is not null;
