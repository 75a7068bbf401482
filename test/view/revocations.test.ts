// The bounded revocation set (src/view/revocations.ts) against a model that keeps everything:
// whatever the bound and the order of additions, prunes and reloads, the set never says "not
// revoked" for a token that a live revocation covers, says "revoked" only for what was revoked,
// answers from memory for every token expiring after what it dropped, and holds at most its bound.
import fc from 'fast-check'
import t from 'tap'
import { BoundedRevocations } from '../../src/view/revocations.js'

type Op =
  | { kind: 'add'; id: number; until: number }
  | { kind: 'prune'; now: number }
  | { kind: 'reload' }

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ kind: fc.constant('add' as const), id: fc.nat(40), until: fc.integer({ min: 1, max: 100 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('prune' as const), now: fc.integer({ min: 0, max: 100 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('reload' as const) }) },
)

t.test('never answers "not revoked" for a covered token; answers from memory past what it dropped', async (t) => {
  const seed = Number(process.env['TESSERA_FUZZ_SEED'] ?? Date.now() % 2 ** 31)
  t.comment(`seed ${seed} (TESSERA_FUZZ_SEED)`)
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 12 }), fc.array(op, { maxLength: 200 }), (bound, ops) => {
      const set = new BoundedRevocations(bound)
      // The truth: id → the latest time its revocation matters; and the clock, as prunes moved it.
      const model = new Map<number, number>()
      let now = 0
      for (const o of ops) {
        if (o.kind === 'add') {
          model.set(o.id, Math.max(o.until, model.get(o.id) ?? 0))
          set.add(String(o.id), o.until)
        } else if (o.kind === 'prune') {
          now = Math.max(now, o.now)
          set.prune(now)
        } else {
          // A reload reads what has not expired, the latest-ending bound + 1, as the repository does.
          const rows = [...model].filter(([, until]) => until > now).sort((a, b) => b[1] - a[1]).slice(0, bound + 1)
          set.replace(rows.map(([id, until]) => ({ id: String(id), untilMs: until })))
        }
        if (set.size > bound) return false
        for (let id = 0; id <= 41; id++) {
          for (let exp = now + 1; exp <= 101; exp++) {
            const answer = set.has(String(id), exp)
            const until = model.get(id)
            // A token expiring at `exp` that this revocation covers: exp <= until.
            if (until !== undefined && until > now && exp <= until && answer === false) return false
            if (answer === true && until === undefined) return false
            if (exp > set.spilledUntil && answer === undefined) return false
          }
        }
      }
      return true
    }),
    { seed, numRuns: 300 },
  )
  t.pass('held')
})

t.test('a bound below 1 is refused', async (t) => {
  t.throws(() => new BoundedRevocations(0))
})
