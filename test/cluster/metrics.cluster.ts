// GET /metrics under WEB_CONCURRENCY=2: a scrape reaches one worker, and answers for all of them
// (counters summed across workers, readiness 1 only when every worker is ready), so that
// consecutive scrapes agree whichever worker takes them. Postgres only; needs `npm run build`.
import * as http from 'node:http'
import t from 'tap'
import { Cluster, instanceEnv } from '../helpers/cluster.js'
import { spawnServer } from '../helpers/process.js'
import { isolatedDatabase } from '../helpers/server.js'

const ADMIN: [string, string] = ['metrics-admin', 'metrics-admin-secret-0123456789']
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const database = await isolatedDatabase()
if (database === undefined) {
  t.plan(0, 'needs Postgres: DATABASE_URL is unset')
} else {
  t.teardown(() => database.drop())
  const srv = await spawnServer(t, instanceEnv(database.url, ADMIN, { WEB_CONCURRENCY: '2' }))
  while (srv.logs.filter((l) => l.msg === 'worker ready').length < 2) await sleep(20)
  const cluster = new Cluster(ADMIN)
  const app = await cluster.createClient(srv, { grant_types: ['client_credentials'] })
  const adminToken = (await cluster.tokens(srv, { grant_type: 'client_credentials', scope: 'admin' }, ADMIN)).access_token

  /** One request on a connection of its own, so that the primary hands each to the next worker. */
  const get = (url: string, headers: Record<string, string> = {}) =>
    new Promise<{ status: number; text: string; pid: string | undefined }>((resolve, reject) => {
      http
        .get(url, { agent: false, headers }, (res) => {
          let text = ''
          res.on('data', (d: Buffer) => (text += d.toString()))
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text, pid: undefined }))
        })
        .on('error', reject)
    })
  const sample = (text: string, series: string) => {
    const line = text.split('\n').find((l) => l.startsWith(`${series} `))
    return line === undefined ? undefined : Number(line.slice(series.length + 1))
  }
  const issued = 'tessera_tokens_issued_total{grant_type="client_credentials"}'

  t.test('every scrape answers for every worker', async (t) => {
    for (let i = 0; i < 10; i++) {
      const r = await cluster.post(srv, '/token', { grant_type: 'client_credentials' }, app)
      t.equal(r.status, 200)
    }
    const scrapes = []
    for (let i = 0; i < 4; i++) {
      const r = await get(`${srv.adminUrl}/metrics`, { authorization: `Bearer ${adminToken}` })
      t.equal(r.status, 200)
      scrapes.push(r.text)
    }
    const counts = scrapes.map((text) => sample(text, issued))
    t.ok(counts.every((c) => c !== undefined && c >= 10), `tokens issued: ${counts.join(', ')}`)
    t.equal(new Set(counts).size, 1, 'the same count from every scrape, whichever worker took it')
    t.ok(scrapes.every((text) => sample(text, 'tessera_ready') === 1), 'ready: every worker is')
    t.ok(scrapes.every((text) => sample(text, 'tessera_view_state{state="leased"}') === 2), 'both workers hold a lease')
  })
}
