// The ceiling for the password grant: argon2.verify with the parameters Tessera hashes with,
// imported from the build so they cannot drift, as fast as this machine allows. Started by
// bench/servers.mjs (startArgon2Ceiling) with an IPC channel: it hashes one password, answers
// { ready, options, threads, inFlight }, then for each { run: { warmup, duration } } announces
// { event: 'open' } and { event: 'close' } at the edges of the measured window and answers
// { event: 'result', verifies, failures, seconds, p50, p99 } (latencies in ms).
//
// Concurrency: as many verifies at once as Tessera lets run (HASH_CONCURRENCY, which the parent
// passes: by default one fewer than the cores, so that the event loop keeps a core), each
// started the moment the last one ends; the ceiling of what Tessera's password grant can reach.
import argon2 from 'argon2'
import { randomBytes } from 'node:crypto'
import { ARGON2_OPTIONS } from '../dist/src/users/passwords.js'

if (typeof process.send !== 'function') {
  process.stderr.write('argon2-ceiling.mjs runs under bench/run.mjs (it needs an IPC channel)\n')
  process.exit(2)
}

const threads = Number(process.env.UV_THREADPOOL_SIZE) || 4
const inFlight = Number(process.env.HASH_CONCURRENCY) || threads * 2
const password = randomBytes(18).toString('base64url')
const hash = await argon2.hash(password, ARGON2_OPTIONS)

/**
 * Keeps `inFlight` verifies going for warm-up + duration seconds; counts (and times) the ones
 * that finish within the window after the warm-up, whose edges it announces as they pass, so the
 * parent can read this process's CPU time and memory around it.
 */
async function run({ warmup, duration }) {
  const latencies = []
  const start = performance.now()
  const windowStart = start + warmup * 1000
  const windowEnd = windowStart + duration * 1000
  let failures = 0
  // Each edge is announced exactly once: by its timer, or after the loop if the last verify
  // ended before the timer fired (the parent waits for both).
  const edges = new Set()
  const announce = (event) => {
    if (edges.has(event)) return
    edges.add(event)
    process.send({ event })
  }
  const opened = setTimeout(() => announce('open'), warmup * 1000)
  const closed = setTimeout(() => announce('close'), (warmup + duration) * 1000)
  const worker = async () => {
    while (performance.now() < windowEnd) {
      const t0 = performance.now()
      const ok = await argon2.verify(hash, password)
      const t1 = performance.now()
      if (t1 >= windowStart && t1 < windowEnd) {
        latencies.push(t1 - t0)
        if (!ok) failures++
      }
    }
  }
  await Promise.all(Array.from({ length: inFlight }, worker))
  clearTimeout(opened)
  clearTimeout(closed)
  announce('open')
  announce('close')
  latencies.sort((a, b) => a - b)
  const at = (q) => (latencies.length === 0 ? undefined : latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))])
  return { event: 'result', verifies: latencies.length, failures, seconds: duration, p50: at(0.5), p99: at(0.99) }
}

process.on('message', (message) => {
  if (message?.run) {
    run(message.run).then(
      (result) => process.send(result),
      (err) => {
        process.stderr.write(`${err.stack ?? err}\n`)
        process.exit(1)
      },
    )
  }
})
process.on('disconnect', () => process.exit(0))
process.on('SIGTERM', () => process.exit(0))

process.send({
  ready: true,
  threads,
  inFlight,
  options: { ...ARGON2_OPTIONS, type: ARGON2_OPTIONS.type === argon2.argon2id ? 'argon2id' : ARGON2_OPTIONS.type },
})
