-- Tessera's schema. Timestamps come from the application's clock (so tests can move time), never
-- from now() in SQL.

create table clients (
  client_id                  text primary key,
  name                       text not null,
  -- SHA-256 of the secret: secrets are 256-bit random values, so a slow hash adds nothing.
  secret_hash                bytea not null,
  -- After a secret rotation with a grace period, the old secret works until this time.
  previous_secret_hash       bytea,
  previous_secret_expires_at timestamptz,
  grant_types                text[] not null,
  scopes                     text[] not null,
  -- Resource identifiers (RFC 8707) this client may ask tokens for; the first is the default aud.
  audiences                  text[] not null default '{}',
  -- Resource identifiers this client serves as a resource server: it may introspect tokens
  -- whose aud names one of them.
  resource_identifiers       text[] not null default '{}',
  access_token_ttl           integer check (access_token_ttl >= 1),
  refresh_token_ttl          integer check (refresh_token_ttl >= 1),
  -- Set by "revoke every token of this client": access tokens issued up to then are inactive (the
  -- jti is a UUIDv7, whose first 48 bits are the issue time in milliseconds).
  tokens_revoked_at          timestamptz,
  created_at                 timestamptz not null,
  updated_at                 timestamptz not null
);

create table users (
  id                uuid primary key,
  username          text not null,
  -- The username as matched: Unicode NFC, lower-cased by the application, so that matching does
  -- not depend on the database's collation.
  username_key      text not null unique,
  password_hash     text not null,
  disabled          boolean not null default false,
  -- When set, narrows what the user's tokens may carry; null means "whatever the client allows".
  scopes            text[],
  created_at        timestamptz not null,
  updated_at        timestamptz not null
);

create table signing_keys (
  kid          text primary key,
  alg          text not null,
  state        text not null check (state in ('next', 'active', 'retired', 'removed')),
  public_jwk   jsonb not null,
  -- AES-256-GCM sealed PKCS#8 under KEY_ENCRYPTION_KEY, with the kid as associated data; erased
  -- when the key is removed.
  private_key  bytea,
  created_at   timestamptz not null,
  activate_at  timestamptz,
  activated_at timestamptz,
  retired_at   timestamptz,
  remove_at    timestamptz,
  removed_at   timestamptz
);
create unique index signing_keys_one_active on signing_keys (state) where state = 'active';

-- A grant is what one password login created: the family of refresh tokens that descend from it
-- (RFC 9700 §4.14.2) and the access tokens issued with them (their `sid` claim names it).
create table grants (
  id         uuid primary key,
  client_id  text not null references clients on delete cascade,
  user_id    uuid not null references users on delete cascade,
  scopes     text[] not null,
  audiences  text[] not null,
  created_at timestamptz not null,
  -- The latest expiry of anything issued from this grant; housekeeping deletes it after that.
  expires_at timestamptz not null,
  revoked_at timestamptz
);
create index grants_client_id on grants (client_id);
create index grants_user_id on grants (user_id);
create index grants_expires_at on grants (expires_at);

create table refresh_tokens (
  -- SHA-256 of the token: it is a 256-bit random value, so the hash is as good as a slow one.
  token_hash bytea primary key,
  grant_id   uuid not null references grants on delete cascade,
  issued_at  timestamptz not null,
  expires_at timestamptz not null,
  -- Set when the token is exchanged; presenting it again is reuse.
  used_at    timestamptz
);
create index refresh_tokens_grant_id on refresh_tokens (grant_id);

-- Access tokens revoked one by one (RFC 7009), kept until they would have expired anyway.
create table revoked_access_tokens (
  jti        text primary key,
  expires_at timestamptz not null
);
create index revoked_access_tokens_expires_at on revoked_access_tokens (expires_at);
