-- Clients that authenticate with keys (private_key_jwt, RFC 7523) or not at all (public clients,
-- token_endpoint_auth_method "none"), DPoP-bound grants (RFC 9449), and the store of proof and
-- assertion jtis that refuses a replay on every instance.

alter table clients add column token_endpoint_auth_method text not null default 'client_secret_basic'
  check (token_endpoint_auth_method in ('client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'));
-- A client that authenticates with a key, or not at all, has no secret; one that switches to a
-- secret method gets a secret only when one is made for it (POST /admin/clients/:id/secret).
alter table clients alter column secret_hash drop not null;
-- The client's public keys (a JWK Set, public members only), or where to fetch them (https).
alter table clients add column jwks jsonb;
alter table clients add column jwks_uri text;
-- The one algorithm its assertions may be signed with (never the one a JWT header names).
alter table clients add column token_endpoint_auth_signing_alg text;
-- RFC 9449 §5.2: every token request of this client must carry a DPoP proof.
alter table clients add column dpop_bound_access_tokens boolean not null default false;

-- The RFC 7638 thumbprint of the key a grant was started with: every refresh of its family must
-- prove possession of that key, and its access tokens stay bound to it.
alter table grants add column dpop_jkt text;

-- jtis of DPoP proofs and client assertions, each kept while its proof or assertion could still be
-- accepted. The primary key makes "insert … on conflict do nothing" let exactly one of two
-- instances that race on one jti through.
create table replay_guard (
  kind       text not null,
  jti        text not null,
  expires_at timestamptz not null,
  primary key (kind, jti)
);
create index replay_guard_expires_at on replay_guard (expires_at);
