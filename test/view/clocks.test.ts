// The lease of an instance's view against its own clocks (src/view/view.ts): it ends at whichever
// of the monotonic and the wall-clock deadline comes first, so that a guest VM resumed without its
// monotonic clock advancing stops answering from memory once its wall clock is set right.
import t from 'tap'
import { startTestServer } from '../helpers/server.js'

const srv = await startTestServer(t)

async function leased(ms = 10_000): Promise<boolean> {
  const until = Date.now() + ms
  while (Date.now() < until) {
    if (srv.tessera.feed.state === 'leased') return true
    await new Promise((r) => setTimeout(r, 20))
  }
  return false
}

t.test('a wall clock that jumps past the lease ends it, though the monotonic clock did not move', async (t) => {
  t.ok(await leased(), 'leased')
  const realNow = Date.now
  const jumped = realNow() + 10_000
  Date.now = () => jumped
  // No await in between: no renewal can run before the check.
  const state = srv.tessera.feed.state
  Date.now = realNow
  t.equal(state, 'behind', 'not leased the moment the wall clock is past its deadline')
  t.ok(await leased(), 'and leased again after the next renewal')
})
