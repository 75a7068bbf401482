-- Failed attempts, counted per kind of key (a username, a network address, a client id), shared
-- by every instance. Replaces login_throttle, which counted usernames only and checked before it
-- counted. Every attempt is counted before it is checked (src/throttle/store.ts), so concurrent
-- attempts can never check more than the budget that was left.
drop table login_throttle;
create table throttle (
  kind              text not null,
  key               text not null,
  failures          integer not null,
  window_started_at timestamptz not null,
  -- Attempts are refused, and not counted, until then.
  blocked_until     timestamptz,
  -- Whether the latest attempt was refused: how one statement tells its caller.
  refused           boolean not null default false,
  primary key (kind, key)
);
create index throttle_window_started_at on throttle (window_started_at);
