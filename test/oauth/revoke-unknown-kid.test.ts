// /revoke with a token whose kid this instance does not know re-reads the keys (a key made a
// moment ago elsewhere must not be missed: test/cluster/revocation.cluster.ts), but anyone with a
// client can make up kids: the reads are rate limited, whatever the rate of such requests
// (issue 15 item 12). Reads are counted at the repository the key manager reads through.
import t from 'tap'
import { keyRepository } from '../../src/keys/repository.js'
import { startTestServer } from '../helpers/server.js'

// No scheduled polls: every read counted is one a request caused.
const srv = await startTestServer(t, { KEY_POLL_INTERVAL_MS: '60000' })
const svc = await srv.createClient({ grant_types: ['client_credentials'] })
const real: string = (await srv.post('/token', { grant_type: 'client_credentials' }, svc.auth)).body.access_token

let reads = 0
const listLive = keyRepository.listLive
keyRepository.listLive = (db) => {
  reads++
  return listLive(db)
}
t.teardown(() => {
  keyRepository.listLive = listLive
})

/** The real token under a header naming a kid nobody has (its signature no longer matters). */
const withKid = (kid: string) => {
  const [header, ...rest] = real.split('.')
  const h = JSON.parse(Buffer.from(header!, 'base64url').toString())
  return [Buffer.from(JSON.stringify({ ...h, kid })).toString('base64url'), ...rest].join('.')
}

t.test('a flood of revocations with made-up kids reads the keys about once a second', async (t) => {
  const SECONDS = 2.5
  reads = 0
  let requests = 0
  const started = performance.now()
  // Eight callers, each sending its next request as soon as the last is answered.
  await Promise.all(
    Array.from({ length: 8 }, async (_, caller) => {
      while (performance.now() - started < SECONDS * 1000) {
        const r = await srv.post('/revoke', { token: withKid(`made-up-${caller}-${requests++}`) }, svc.auth)
        if (r.status !== 200) throw new Error(`revoke: ${r.status} ${r.text}`)
      }
    }),
  )
  const elapsed = (performance.now() - started) / 1000
  // One read a second for /revoke, and one a second for verification's own look for a new key.
  const bound = 2 * Math.ceil(elapsed) + 2
  t.ok(reads <= bound, `${reads} reads for ${requests} requests in ${elapsed.toFixed(1)} s (at most ${bound})`)
  t.ok(requests >= 16, `every caller was answered, more than once (${requests} requests)`)
})
