-- Failed password logins per username (known or not, so that throttling reveals nothing about
-- which usernames exist). After a few failures, further attempts wait out a doubling delay.
create table login_throttle (
  username_key    text primary key,
  failures        integer not null,
  last_failure_at timestamptz not null,
  blocked_until   timestamptz
);
create index login_throttle_last_failure_at on login_throttle (last_failure_at);
