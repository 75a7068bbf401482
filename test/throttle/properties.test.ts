// Properties of the throttles (fast-check), on the server's own throttles and database, under
// any interleaving of attempts from any set of addresses (waves of concurrent attempts, the
// clock moved between them):
// (a) no network (an IPv4 address, an IPv6 /64) has more wrong passwords or wrong client
//     credentials checked in a window than its budget;
// (b) while fewer than LOGIN_USER_ADDRESSES networks are guessing at a username, its owner, one
//     attempt at a time from a network with no failures, is never refused (the bound SECURITY.md
//     states: zero seconds).
// Seeded: the seed is printed first, and fast-check prints it again with the failing case.
import fc from 'fast-check'
import t from 'tap'
import { addressKey } from '../../src/throttle/address.js'
import { isRefusal } from '../../src/throttle/login.js'
import { TestClock, startTestServer } from '../helpers/server.js'

const LOGIN_BUDGET = 6
const CLIENT_BUDGET = 5
const USER_NETWORKS = 3
const clock = new TestClock()
const srv = await startTestServer(
  t,
  {
    LOGIN_FREE_FAILURES: '2',
    LOGIN_MAX_DELAY: '30',
    LOGIN_ADDRESS_FAILURES: String(LOGIN_BUDGET),
    LOGIN_USER_ADDRESSES: String(USER_NETWORKS),
    CLIENT_AUTH_FAILURES: '3',
    CLIENT_AUTH_ADDRESS_FAILURES: String(CLIENT_BUDGET),
  },
  { clock },
)
const { loginThrottle, clientThrottle } = srv.tessera
const seed = Number(process.env['PROPERTY_SEED'] ?? Math.floor(Math.random() * 2 ** 31))
const numRuns = Number(process.env['PROPERTY_RUNS'] ?? 25)

// Two /64s spelled several ways, and two IPv4 addresses.
const ADDRESSES = ['2001:db8:1:1::1', '2001:db8:1:1::2', '2001:DB8:1:1:ffff:0:0:9', '2001:db8:1:2::1', '2001:db8:1:2::abcd', '192.0.2.1', '192.0.2.2']
const attempt = fc.record({ from: fc.constantFrom(...ADDRESSES), user: fc.constantFrom('ann', 'bob', 'cyd'), right: fc.boolean() })
// Each wave's attempts run at once; then the clock moves on (a whole run stays within one window).
const waves = fc.array(fc.record({ attempts: fc.array(attempt, { minLength: 1, maxLength: 8 }), advance: fc.constantFrom(0, 0, 1, 2, 7, 31) }), {
  minLength: 1,
  maxLength: 10,
})

let run = 0
/** Usernames of a run of their own, and a clock past every window and delay of the runs before. */
function nextRun(): string {
  clock.advance(7200)
  return `run${run++}-`
}

const bump = (counts: Map<string, number>, key: string) => counts.set(key, (counts.get(key) ?? 0) + 1)
const over = (counts: Map<string, number>, budget: number) => [...counts].filter(([, n]) => n > budget)

t.test('(a) no network has more wrong passwords checked than LOGIN_ADDRESS_FAILURES', async (t) => {
  t.comment(`fast-check seed ${seed}, ${numRuns} runs (PROPERTY_SEED=${seed} repeats this run)`)
  const property = fc.asyncProperty(waves, async (scenario) => {
    const prefix = nextRun()
    const wrong = new Map<string, number>()
    for (const wave of scenario) {
      await Promise.all(
        wave.attempts.map(async ({ from, user, right }) => {
          const a = await loginThrottle.begin(prefix + user, from)
          if (isRefusal(a)) return
          if (right) await loginThrottle.succeeded(a)
          else bump(wrong, addressKey(from, 64))
        }),
      )
      clock.advance(wave.advance)
    }
    return over(wrong, LOGIN_BUDGET).length === 0
  })
  await fc.assert(property, { seed, numRuns })
  t.pass(`${numRuns} interleavings`)
})

t.test('(a) no network has more wrong client credentials checked than CLIENT_AUTH_ADDRESS_FAILURES', async (t) => {
  const property = fc.asyncProperty(waves, async (scenario) => {
    nextRun()
    const wrong = new Map<string, number>()
    for (const wave of scenario) {
      await Promise.all(
        wave.attempts.map(async ({ from, user, right }) => {
          const check = await clientThrottle.admit(from)
          if (typeof check === 'number') return
          // The check itself takes a moment, as a signature or a database read would.
          await new Promise((r) => setImmediate(r))
          if (right) return check.passed()
          bump(wrong, addressKey(from, 64))
          await check.failed(user)
        }),
      )
      clock.advance(wave.advance)
    }
    return over(wrong, CLIENT_BUDGET).length === 0
  })
  await fc.assert(property, { seed, numRuns })
  t.pass(`${numRuns} interleavings`)
})

t.test('(b) fewer networks than LOGIN_USER_ADDRESSES guessing never keep the owner out', async (t) => {
  // Guessing networks (fewer than USER_NETWORKS, each wrong every time) and the owner's turns,
  // one attempt at a time, from networks that never failed; the owner's attempt in a wave runs
  // alongside that wave's guesses.
  const guessers = fc.uniqueArray(fc.constantFrom('2001:db8:1:1::1', '2001:db8:1:2::1', '192.0.2.1', '192.0.2.2'), { maxLength: USER_NETWORKS - 1 })
  const ownerFrom = fc.constantFrom('2001:db8:2:1::1', '2001:db8:2:2::5', '198.51.100.1')
  const scenario = guessers.chain((from) =>
    fc.array(
      fc.record({
        guesses: fc.array(fc.constantFrom(...(from.length > 0 ? from : ['192.0.2.9'])), { maxLength: from.length > 0 ? 6 : 0 }),
        owner: fc.option(ownerFrom, { nil: undefined }),
        advance: fc.constantFrom(0, 1, 2, 7, 31),
      }),
      { minLength: 1, maxLength: 10 },
    ),
  )
  const property = fc.asyncProperty(scenario, async (turns) => {
    const owner = `${nextRun()}owner`
    for (const turn of turns) {
      const guesses = turn.guesses.map(async (from) => {
        const a = await loginThrottle.begin(owner, from)
        return a
      })
      const mine = turn.owner === undefined ? undefined : await loginThrottle.begin(owner, turn.owner)
      await Promise.all(guesses)
      if (mine !== undefined) {
        if (isRefusal(mine)) return false
        await loginThrottle.succeeded(mine)
      }
      clock.advance(turn.advance)
    }
    return true
  })
  await fc.assert(property, { seed, numRuns })
  t.pass(`${numRuns} interleavings`)
})
