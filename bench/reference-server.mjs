// The reference peer: node-oidc-provider 9 configured for the same work Tessera does in the
// benchmark, run as its own process so the two never share an event loop or CPU accounting.
//
// Configured through one JSON argument: { clientId, clientSecret, scope, resource }.
// Prints one JSON line `{"url": …}` on stdout once it listens on an ephemeral loopback port.
//
// Token formats (oidc-provider 9):
// - client_credentials WITH `resource` → a JWT access token (RFC 9068 profile), because
//   features.resourceIndicators.getResourceServerInfo answers accessTokenFormat "jwt";
//   this is what the issuance scenario measures, matching Tessera's JWTs.
// - client_credentials WITHOUT `resource` → an opaque token kept in the in-memory adapter.
//   oidc-provider refuses to introspect JWTs (lib/shared/reject_structured_tokens.js:
//   "Structured JWT Tokens cannot be introspected"), so the introspection scenario uses one of
//   these: a lookup in an in-process LRU map.
import { createServer } from 'node:http'
import { exportJWK, generateKeyPair } from 'jose'
import Provider from 'oidc-provider'

const { clientId, clientSecret, scope, resource } = JSON.parse(process.argv[2] ?? '{}')
if (!clientId || !clientSecret || !scope || !resource) {
  process.stderr.write('usage: reference-server.mjs \'{"clientId","clientSecret","scope","resource"}\'\n')
  process.exit(2)
}

// ES256, as Tessera signs by default, so both sides pay for the same signature.
const { privateKey } = await generateKeyPair('ES256', { extractable: true })
const signingKey = { ...(await exportJWK(privateKey)), kid: 'bench-es256', alg: 'ES256', use: 'sig' }

const server = createServer()
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
const { port } = server.address()
const issuer = `http://127.0.0.1:${port}`

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope,
    },
  ],
  scopes: ['openid', scope],
  jwks: { keys: [signingKey] },
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  cookies: { keys: ['bench-cookie-key-not-used-for-tokens'] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true, allowedPolicy: async () => true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf,
      useGrantedResource: async () => false,
      getResourceServerInfo: async (_ctx, indicator) => {
        if (indicator !== resource) throw new Provider.errors.InvalidTarget()
        return { scope, audience: resource, accessTokenTTL: 600, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } } }
      },
    },
  },
  ttl: { ClientCredentials: 600 },
})

server.on('request', provider.callback())

const stop = () => server.close(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)

process.stdout.write(
  `${JSON.stringify({
    url: issuer,
    tokenPath: '/token',
    introspectionPath: '/token/introspection',
    jwksPath: '/jwks',
    oidcProviderVersion: (await import('oidc-provider/package.json', { with: { type: 'json' } })).default.version,
  })}\n`,
)
