// The `seeded` case: what the data costs an instance. One Tessera on an empty database, then one
// on a database seeded with many clients, users, deny-listed access tokens and revoked grants
// (BENCH_SEED_*; 100,000 / 1,000,000 / 200,000 / 100,000 by default): how long it takes to be
// ready and to hold its lease, its resident memory, and its client_credentials and introspection
// rates. Run alone: `npm run bench:seeded`. See bench/README.md.
import { fileURLToPath } from 'node:url'
import { adminOf, call, ccBody, fmt, mb, memoryOf, migratedSchema, onDatabase, rate, runAlone, sleep } from './cases.mjs'
import { FORM, form, RESOURCE, SCOPE } from './scenarios.mjs'
import { startTessera } from './servers.mjs'

/**
 * The seed, in SQL over generate_series: ids and names from the row number, and one fixed hash
 * for every secret and password (nobody authenticates as a seeded client or user; what they cost
 * is their rows). Denied jtis expire within the access-token lifetime, as real ones do, and
 * revoked grants within the refresh-token lifetime.
 */
async function seed(url, n) {
  await onDatabase(url, async (c) => {
    await c.query(
      `insert into clients (client_id, name, secret_hash, grant_types, scopes, audiences, created_at, updated_at)
       select 'seed-' || i, 'seeded client ' || i, sha256('seed'::bytea), '{client_credentials}', $2, $3, now(), now()
       from generate_series(1, $1::int) i`,
      [n.clients, [SCOPE], [RESOURCE]],
    )
    await c.query(
      `insert into users (id, username, username_key, password_hash, created_at, updated_at)
       select md5('user ' || i)::uuid, 'seed-user-' || i, 'seed-user-' || i,
         '$argon2id$v=19$m=19456,t=2,p=1$c2VlZHNlZWRzZWVk$YQ1hfQ3M7Sx6I3cIaDqJ3Q7P3Yl4C6Lq2q2E0Nw8qAI', now(), now()
       from generate_series(1, $1::int) i`,
      [n.users],
    )
    await c.query(
      `insert into revoked_access_tokens (jti, expires_at)
       select md5('jti ' || i)::uuid::text, now() + make_interval(secs => 60 + i % 540)
       from generate_series(1, $1::int) i`,
      [n.deniedJtis],
    )
    // Each grant needs a client and a user; the seeded ones, round robin.
    if (n.revokedGrants > 0 && (n.clients === 0 || n.users === 0)) throw new Error('BENCH_SEED_GRANTS needs seeded clients and users')
    await c.query(
      `insert into grants (id, client_id, user_id, scopes, audiences, created_at, expires_at, revoked_at)
       select md5('grant ' || i)::uuid, 'seed-' || (1 + i % $2::int), md5('user ' || (1 + i % $3::int))::uuid, $4, $5,
         now(), now() + make_interval(hours => 1 + i % 336), now()
       from generate_series(1, $1::int) i`,
      [n.revokedGrants, Math.max(1, n.clients), Math.max(1, n.users), [SCOPE], [RESOURCE]],
    )
    await c.query('analyze')
  })
}

async function leased(server, ms = 120_000) {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    try {
      const r = await fetch(`${server.url}/readyz`)
      if (((await r.json()).view ?? '') === 'leased') return true
    } catch {
      // not yet
    }
    await sleep(20)
  }
  return false
}

async function one(base, label, seedWith, settings, log) {
  const schema = await migratedSchema(base)
  let server
  try {
    let seedSeconds
    if (seedWith !== undefined) {
      const t = performance.now()
      await seed(schema.url, seedWith)
      seedSeconds = (performance.now() - t) / 1000
      log(`  ${label}: seeded in ${fmt(seedSeconds, 1)} s`)
    }
    const t0 = performance.now()
    server = await startTessera({ name: `seeded-${label}`, databaseUrl: schema.url, logLevel: settings.logLevel })
    const ready = (performance.now() - t0) / 1000
    if (!(await leased(server))) throw new Error(`${label}: no lease within 2 minutes`)
    const leasedAt = (performance.now() - t0) / 1000
    // What it holds once the first load and its garbage are behind it.
    await sleep(2000)
    const idle = memoryOf(server.pid)
    const admin = await adminOf(server)
    const c = await admin.client()
    const { access_token: jwt } = await call('POST', `${server.url}/token`, { headers: { authorization: c.auth, 'content-type': FORM }, body: ccBody })
    const load = { warmup: settings.warmup, seconds: settings.duration, connections: settings.connections }
    const cc = await rate(server.url, { method: 'POST', path: '/token', headers: { authorization: c.auth, 'content-type': FORM }, body: ccBody, expect: '"access_token":"eyJ' }, load)
    const introspection = await rate(
      server.url,
      { method: 'POST', path: '/introspect', headers: { authorization: c.auth, 'content-type': FORM }, body: form({ token: jwt }), expect: '"active":true' },
      load,
    )
    const after = memoryOf(server.pid)
    log(`  ${label}: ready ${fmt(ready, 1)} s, leased ${fmt(leasedAt, 1)} s, ${mb(idle.rss)} MB idle, ${mb(after.peak)} MB peak, client_credentials ${fmt(cc.rps)}/s, introspection ${fmt(introspection.rps)}/s`)
    return { label, seedSeconds, ready, leasedAt, idle: idle.rss, afterLoad: after.rss, peak: after.peak, cc, introspection }
  } finally {
    await server?.stop()
    await schema.drop()
  }
}

export async function run({ base, log, settings }) {
  const n = settings.seed
  const what = `${n.clients.toLocaleString('en')} clients, ${n.users.toLocaleString('en')} users, ${n.deniedJtis.toLocaleString('en')} deny-listed access tokens, ${n.revokedGrants.toLocaleString('en')} revoked grants`
  log(`\n== seeded: an empty database, then one with ${what}`)
  const empty = await one(base, 'empty', undefined, settings, log)
  const seeded = await one(base, 'seeded', n, settings, log)
  const failures = []
  for (const r of [empty, seeded]) {
    for (const [name, x] of [['client_credentials', r.cc], ['introspection', r.introspection]]) {
      if (x.errors > 0) failures.push(`seeded, ${r.label} database, ${name}: ${x.errors} errors; first: ${x.sample}`)
    }
  }
  const row = (r) =>
    `| ${r.label} | ${r.seedSeconds === undefined ? '–' : fmt(r.seedSeconds, 1)} | ${fmt(r.ready, 1)} | ${fmt(r.leasedAt, 1)} | ${mb(r.idle)} | ${mb(r.afterLoad)} | ${mb(r.peak)} | ${fmt(r.cc.rps)} (p99 ${fmt(r.cc.p99)} ms) | ${fmt(r.introspection.rps)} (p99 ${fmt(r.introspection.p99)} ms) |`
  const ratio = (a, b) => `${fmt(a / b, 2)}×`
  const section = [
    '## `seeded`: an instance on a large database beside one on an empty database',
    '',
    `Tessera on Postgres, \`WEB_CONCURRENCY=1\`, default view bounds; the seeded database holds ${what}. Ready: /readyz answers 200; leased: it answers from memory. Memory: resident set 2 s after the lease, after the load, and the peak since start.`,
    '',
    '| database | seeding s | ready s | leased s | RSS idle MB | RSS after load MB | peak RSS MB | client_credentials req/s | introspection req/s |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    row(empty),
    row(seeded),
    `| seeded ÷ empty | | ${ratio(seeded.ready, empty.ready)} | ${ratio(seeded.leasedAt, empty.leasedAt)} | ${ratio(seeded.idle, empty.idle)} | ${ratio(seeded.afterLoad, empty.afterLoad)} | ${ratio(seeded.peak, empty.peak)} | ${ratio(seeded.cc.rps, empty.cc.rps)} | ${ratio(seeded.introspection.rps, empty.introspection.rps)} |`,
  ].join('\n')
  return { section, failures }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await runAlone(run)
