-- Values written through DATABASE_URL and read back through DATABASE_LISTEN_URL, to prove that
-- both reach this database and this schema (src/db/connect.ts, checkSameDatabase). Each row lives
-- for the moment of one check; ones a crash left behind go with the next check.

create table listen_probes (
  token text primary key,
  created_at timestamptz not null default now()
);
