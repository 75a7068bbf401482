// Resource servers under continuous load across rotations: tokens keep coming, each is verified
// at once and again later through a JWKS cache that honours /jwks's max-age strictly (it never
// refetches early on an unknown kid), and not one fails. Real time, real timer: this is the test
// that the pre-publication window is long enough.
import t from 'tap'
import { createRemoteJWKSet, jwtVerify } from 'jose'
import { decodeJwt, startTestServer } from '../helpers/server.js'
import { adminToken } from './support.js'

const RUN_MS = 11_000
const ROTATE_AT_MS = [1_000, 5_000]
const RESOURCE_SERVERS = 3

const srv = await startTestServer(t, { JWKS_MAX_AGE: '2', KEY_POLL_INTERVAL_MS: '100' })
const app = await srv.createClient({ grant_types: ['client_credentials'], scopes: ['read'] })

t.test('zero verification failures across rotations under load', async (t) => {
  const first = await srv.get('/jwks')
  const maxAgeMs = Number(/max-age=(\d+)/.exec(first.headers.get('cache-control') ?? '')?.[1]) * 1000
  t.equal(maxAgeMs, 2000)
  const admin = await adminToken(srv)

  const failures: string[] = []
  const signedBy = new Set<string>()
  let verified = 0
  const started = Date.now()
  const running = () => Date.now() - started < RUN_MS
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

  async function resourceServer(index: number) {
    // Staggered, so that the caches expire at different moments around each promotion.
    await sleep(index * 700)
    const keys = createRemoteJWKSet(new URL('/jwks', srv.url), { cacheMaxAge: maxAgeMs, cooldownDuration: maxAgeMs })
    const verify = async (token: string) => {
      try {
        await jwtVerify(token, keys, { issuer: srv.issuer, typ: 'at+jwt' })
        verified++
      } catch (err) {
        failures.push(`${decodeJwt(token).header.kid}: ${(err as Error).message}`)
      }
    }
    // Tokens are verified again 1.5 s after they were issued, when a rotation may have come between.
    const later: Array<{ at: number; token: string }> = []
    while (running()) {
      const r = await srv.post('/token', { grant_type: 'client_credentials' }, app.auth)
      if (r.status !== 200) {
        failures.push(`token endpoint: ${r.status} ${r.text}`)
        continue
      }
      const token = r.body.access_token as string
      signedBy.add(decodeJwt(token).header.kid)
      await verify(token)
      later.push({ at: Date.now(), token })
      while (later.length > 0 && Date.now() - later[0]!.at > 1500) await verify(later.shift()!.token)
    }
    for (const { token } of later) await verify(token)
  }

  async function rotations() {
    for (const at of ROTATE_AT_MS) {
      await sleep(Math.max(0, at - (Date.now() - started)))
      const r = await srv.admin('POST', '/admin/keys/rotate', undefined, admin)
      if (r.status !== 200) failures.push(`rotate: ${r.status} ${r.text}`)
    }
  }

  await Promise.all([rotations(), ...Array.from({ length: RESOURCE_SERVERS }, (_, i) => resourceServer(i))])
  t.same(failures, [], 'no token failed verification')
  t.ok(verified > 30, `${verified} verifications`)
  t.equal(signedBy.size, ROTATE_AT_MS.length + 1, 'tokens were signed by every key of the run')
})
