// The `revocation_storm` case: what strictness costs writers. Two Tessera instances on one
// Postgres database; BENCH_REVOKE_TOKENS access tokens (20,000 by default) issued, then revoked at
// /revoke by BENCH_REVOKE_CALLERS concurrent callers (50), each call sent to the two instances in
// turn: revocations per second and each call's latency, once with SERVE_FROM_MEMORY=true (every
// revocation waits until the other instance has applied it, or its lease ran out) and once with
// false (nothing to wait for). Afterwards a sample of the tokens is introspected on both instances
// and must be inactive. Measurement only. Run alone: `npm run bench:revocations`.
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { adminOf, call, ccBody, fmt, migratedSchema, percentiles, runAlone, sleep } from './cases.mjs'
import { FORM, form } from './scenarios.mjs'
import { startTessera } from './servers.mjs'

/** Runs `task(i)` for 0..n-1 with `workers` at a time; resolves with each call's duration in ms. */
async function concurrently(n, workers, task) {
  const durations = new Float64Array(n)
  let next = 0
  const worker = async () => {
    while (next < n) {
      const i = next++
      const t = performance.now()
      await task(i)
      durations[i] = performance.now() - t
    }
  }
  await Promise.all(Array.from({ length: Math.min(workers, n) }, worker))
  return durations
}

async function leased(server, ms = 30_000) {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    const view = await fetch(`${server.url}/readyz`).then((r) => r.json(), () => ({}))
    if (view.view === 'leased') return true
    await sleep(50)
  }
  return false
}

async function one(base, fromMemory, settings, log) {
  const schema = await migratedSchema(base)
  const shared = {
    databaseUrl: schema.url,
    logLevel: settings.logLevel,
    keyEncryptionKey: randomBytes(32).toString('base64'),
    adminSecret: randomBytes(24).toString('base64url'),
    // One issuer: a token issued by either instance verifies on the other.
    env: { ISSUER: 'http://tessera.bench', SERVE_FROM_MEMORY: String(fromMemory) },
  }
  const instances = []
  try {
    for (const name of ['storm-a', 'storm-b']) instances.push(await startTessera({ name, ...shared }))
    if (fromMemory) {
      for (const s of instances) if (!(await leased(s))) throw new Error(`${s.name}: no lease`)
    }
    const c = await (await adminOf(instances[0])).client()
    const headers = { authorization: c.auth, 'content-type': FORM }
    const n = settings.revokeTokens
    const tokens = new Array(n)
    await concurrently(n, settings.revokeCallers, async (i) => {
      tokens[i] = (await call('POST', `${instances[i % 2].url}/token`, { headers, body: ccBody })).access_token
    })
    let errors = 0
    let sample
    const t0 = performance.now()
    const latencies = await concurrently(n, settings.revokeCallers, async (i) => {
      try {
        const r = await fetch(`${instances[i % 2].url}/revoke`, { method: 'POST', headers, body: form({ token: tokens[i] }) })
        await r.arrayBuffer()
        if (r.status !== 200) {
          errors++
          sample ??= `${r.status}`
        }
      } catch (err) {
        errors++
        sample ??= err.message
      }
    })
    const seconds = (performance.now() - t0) / 1000
    // Each revocation was answered: from then on neither instance may call its token active.
    let stillActive = 0
    const step = Math.max(1, Math.floor(n / 100))
    for (let i = 0; i < n; i += step) {
      for (const s of instances) {
        const r = await call('POST', `${s.url}/introspect`, { headers, body: form({ token: tokens[i] }) })
        if (r.active !== false) stillActive++
      }
    }
    const { p50, p99 } = percentiles(latencies)
    const result = { fromMemory, n, rps: n / seconds, p50, p99, errors, sample, stillActive }
    log(`  SERVE_FROM_MEMORY=${fromMemory}: ${fmt(result.rps)} revocations/s, p50 ${fmt(p50, 1)} ms, p99 ${fmt(p99, 1)} ms, ${errors} errors, ${stillActive} still active`)
    return result
  } finally {
    for (const s of instances) await s.stop()
    await schema.drop()
  }
}

export async function run({ base, log, settings }) {
  log(`\n== revocation_storm: two instances, ${settings.revokeTokens} access tokens revoked by ${settings.revokeCallers} concurrent callers`)
  const rows = []
  for (const fromMemory of [true, false]) rows.push(await one(base, fromMemory, settings, log))
  const failures = rows.flatMap((r) => [
    ...(r.errors > 0 ? [`revocation_storm, SERVE_FROM_MEMORY=${r.fromMemory}: ${r.errors} revocations failed; first: ${r.sample}`] : []),
    ...(r.stillActive > 0 ? [`revocation_storm, SERVE_FROM_MEMORY=${r.fromMemory}: ${r.stillActive} introspections of revoked tokens answered active`] : []),
  ])
  const [memory, perCall] = rows
  const section = [
    '## `revocation_storm`: what strictness costs writers',
    '',
    `Two Tessera instances (\`WEB_CONCURRENCY=1\` each) on one Postgres database; ${settings.revokeTokens.toLocaleString('en')} access tokens revoked at \`/revoke\` by ${settings.revokeCallers} concurrent callers, sent to the two instances in turn. One run each way; afterwards 1 token in 100 is introspected on both instances and must be inactive.`,
    '',
    '| SERVE_FROM_MEMORY | revocations/s | p50 ms | p99 ms | errors | revoked but active |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map((r) => `| ${r.fromMemory} | ${fmt(r.rps)} | ${fmt(r.p50, 1)} | ${fmt(r.p99, 1)} | ${r.errors} | ${r.stillActive} |`),
    `| true ÷ false | ${fmt(memory.rps / perCall.rps, 2)}× | ${fmt(memory.p50 / perCall.p50, 2)}× | ${fmt(memory.p99 / perCall.p99, 2)}× | | |`,
  ].join('\n')
  return { section, failures }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await runAlone(run)
