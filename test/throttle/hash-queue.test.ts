// The hashing queue is shared fairly between addresses (src/users/hash-queue.ts): while a flood
// from many addresses keeps every place taken, a person from an address with nothing queued
// still gets in at once; a 503's Retry-After is the wait the queue is expected to take; and a
// guess turned away at the queue's door is not counted against its address.
import t from 'tap'
import { clientAgent, postFrom } from '../helpers/from.js'
import { startTestServer } from '../helpers/server.js'

const srv = await startTestServer(t, {
  HASH_CONCURRENCY: '1',
  HASH_QUEUE: '2',
  // The login throttle must not be what refuses anything here.
  LOGIN_FREE_FAILURES: '1000',
  LOGIN_ADDRESS_FAILURES: '100000',
  LOGIN_USER_ADDRESSES: '100000',
})
const app = await srv.createClient({ grant_types: ['password'] })
await srv.createUser('rita', 'rita password')
const places = 1 + 2

/** Keep-alive connections from addresses of their own, each sending wrong guesses back to back until stopped. */
function flood(connections: number) {
  let stop = false
  const answers: Array<{ from: string; status: number; retryAfter: string | null }> = []
  let n = 0
  const done = Promise.all(
    Array.from({ length: connections }, async (_, c) => {
      const from = `127.8.0.${c + 2}`
      const agent = clientAgent(from)
      while (!stop) {
        const r = await postFrom(from, srv.url, '/token', { grant_type: 'password', username: `flood-${n++}`, password: 'guess' }, app.auth, {}, agent)
        answers.push({ from, status: r.status, retryAfter: r.headers.get('retry-after') })
      }
      agent.destroy()
    }),
  )
  return {
    answers,
    async stop() {
      stop = true
      await done
    },
  }
}

/** Resolves once every place in the queue is taken (not counting those kept for newcomers). */
async function queueFull(): Promise<void> {
  for (;;) {
    const { running, waiting } = srv.tessera.hasher.depth
    if (running + waiting >= places) return
    await new Promise((r) => setImmediate(r))
  }
}

t.test('while a flood fills the queue, a person from an address of their own gets in at once', async (t) => {
  const f = flood(12)
  // Once every flooding address has been answered, none of them is new to the queue any more.
  while (new Set(f.answers.map((a) => a.from)).size < 12) await new Promise((r) => setTimeout(r, 10))
  for (let i = 0; i < 3; i++) {
    await queueFull()
    const r = await postFrom(`127.8.1.${i + 2}`, srv.url, '/token', { grant_type: 'password', username: 'rita', password: 'rita password' }, app.auth)
    t.equal(r.status, 200, `login ${i + 1} while every place was taken`)
  }
  await f.stop()

  const unavailable = f.answers.filter((a) => a.status === 503)
  t.ok(unavailable.length > 0, `the flood was turned away too (${unavailable.length} times)`)
  // Three places of argon2 (about 30 ms each, a few times that on a loaded machine) take well
  // under a second: Retry-After says 1, not a constant 2.
  t.same([...new Set(unavailable.map((a) => a.retryAfter))], ['1'], 'Retry-After is the expected wait')
  t.ok(f.answers.every((a) => a.status === 400 || a.status === 503), 'the flood got 400 (checked) or 503')

  // A guess refused at the queue's door counted nothing against its address.
  const counted = await srv.tessera.db.selectFrom('throttle').select(['key', 'failures']).where('kind', '=', 'login_address').execute()
  for (const { key, failures } of counted) {
    const checked = f.answers.filter((a) => a.from === key && a.status === 400).length
    t.equal(failures, checked, `${key}: ${failures} counted, ${checked} checked`)
  }
})
