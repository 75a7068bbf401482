// `npm run bench:floor`: what bounds `client_credentials` on one core. Runs, in alternating
// rounds under the bench's load (autocannon, 50 connections), three servers of one process each:
//   http      fastify + @fastify/formbody answering a token-sized JSON: HTTP alone
//   http+sign the same, signing an ES256 JWT per request (fast-jwt, a key made once): what any
//             server that issues ES256 JWTs on one event loop pays, and nothing else
//   peer      node-oidc-provider 9's client_credentials (bench/reference-server.mjs)
// and prints each one's req/s and its ratio to the peer in the same round. A server that does no
// client authentication, no scope or audience checks and no metrics reaches the http+sign row;
// so that row over the peer is the most that Tessera's `client_credentials` ratio can be.
// Knobs: BENCH_DURATION (default 10), BENCH_WARMUP (2), BENCH_CONNECTIONS (50), BENCH_ROUNDS (3).
import formbody from '@fastify/formbody'
import autocannon from 'autocannon'
import Fastify from 'fastify'
import { createSigner } from 'fast-jwt'
import { fork } from 'node:child_process'
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { startReference, stopAll } from './servers.mjs'

const FORM = 'application/x-www-form-urlencoded'
const BODY = 'grant_type=client_credentials&scope=api%3Aread&resource=https%3A%2F%2Fapi.example'

if (process.argv[2] === 'serve') {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const sign = createSigner({ key: privateKey.export({ format: 'pem', type: 'pkcs8' }), algorithm: 'ES256', kid: 'k1', header: { typ: 'at+jwt' } })
  const signing = process.argv[3] === 'http+sign'
  const filler = 'x'.repeat(330)
  const app = Fastify({ logger: false })
  await app.register(formbody)
  app.post('/token', async (_request, reply) => {
    reply.header('cache-control', 'no-store')
    const now = Math.floor(Date.now() / 1000)
    const claims = { iss: 'http://127.0.0.1', sub: 'bench', aud: 'https://api.example', exp: now + 300, iat: now, jti: randomUUID(), client_id: 'bench', scope: 'api:read' }
    return { access_token: signing ? sign(claims) : filler, token_type: 'Bearer', expires_in: 300, scope: 'api:read' }
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  process.send({ url: `http://127.0.0.1:${app.server.address().port}` })
} else {
  const number = (name, fallback) => Number(process.env[name] ?? fallback)
  const duration = number('BENCH_DURATION', 10)
  const warmup = number('BENCH_WARMUP', 2)
  const connections = number('BENCH_CONNECTIONS', 50)
  const rounds = number('BENCH_ROUNDS', 3)

  const startFloor = async (mode) => {
    const child = fork(fileURLToPath(import.meta.url), ['serve', mode], { stdio: 'inherit' })
    const { url } = await new Promise((resolve) => child.once('message', resolve))
    return { name: mode, url: `${url}/token`, auth: 'Basic YmVuY2g6YmVuY2g=', stop: () => child.kill() }
  }
  const clientSecret = randomBytes(24).toString('base64url')
  const peer = await startReference({ name: 'peer', clientId: 'bench-client', clientSecret, scope: 'api:read', resource: 'https://api.example' })
  const servers = [
    await startFloor('http'),
    await startFloor('http+sign'),
    { name: 'peer', url: `${peer.url}${peer.tokenPath}`, auth: `Basic ${Buffer.from(`bench-client:${clientSecret}`).toString('base64')}` },
  ]
  const load = (server, seconds) =>
    autocannon({ url: server.url, method: 'POST', connections, duration: seconds, headers: { authorization: server.auth, 'content-type': FORM }, body: BODY })

  const results = new Map(servers.map((s) => [s.name, []]))
  try {
    for (let round = 0; round < rounds; round++) {
      for (const server of round % 2 === 0 ? servers : [...servers].reverse()) {
        await load(server, warmup)
        const r = await load(server, duration)
        if (r.non2xx > 0 || r.errors > 0) throw new Error(`${server.name}: ${r.non2xx} non-2xx, ${r.errors} errors`)
        results.get(server.name).push(r.requests.average)
        process.stderr.write(`  round ${round + 1}/${rounds} ${server.name.padEnd(10)} ${Math.round(r.requests.average)} req/s  p99 ${r.latency.p99} ms\n`)
      }
    }
  } finally {
    for (const s of servers) s.stop?.()
    await stopAll()
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  const ratios = (name) => results.get(name).map((v, i) => v / results.get('peer')[i])
  console.log(`| server | req/s (median of ${rounds}) | ÷ peer (median of the rounds' ratios) |\n| --- | ---: | ---: |`)
  for (const [name, values] of results) {
    console.log(`| ${name} | ${Math.round(median(values))} | ${name === 'peer' ? 'peer' : `${median(ratios(name)).toFixed(2)}×`} |`)
  }
}
