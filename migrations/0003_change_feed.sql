-- The change feed and the leases that let each instance answer from memory (src/view/).
--
-- Every write that can turn a "yes" into a "no" (a revocation, a client change, a user disabled,
-- a key removed) records a change in the same transaction. The single row of change_head is
-- bumped for it: its row lock makes such transactions commit one at a time, in sequence order,
-- so the sequence has no gaps and an instance that has applied change n has seen every change
-- before it.
create table change_head (
  one boolean primary key default true check (one),
  seq bigint  not null
);
insert into change_head (seq) values (0);

-- What changed, for instances that missed a notification. Kept a while, then purged: an instance
-- further behind than that reloads its whole view.
create table changes (
  seq        bigint primary key,
  kind       text not null,
  subject    text not null,
  -- How long the fact matters (a revoked token's expiry); null for a record to re-read.
  until      timestamptz,
  created_at timestamptz not null default now()
);
create index changes_created_at on changes (created_at);

-- The instances serving over this database. An instance answers from memory only while it holds
-- an unexpired lease, and a lease is extended only while the instance has applied every change
-- (acked_seq = change_head.seq): a writer waits until every unexpired lease has acknowledged its
-- change or run out. Lease times are the database's clock, never an instance's.
create table instances (
  id               uuid primary key,
  host             text not null,
  pid              integer not null,
  started_at       timestamptz not null default now(),
  lease_expires_at timestamptz not null,
  acked_seq        bigint not null,
  renewed_at       timestamptz not null default now()
);
