// A flood of password grants, as a process of its own so that it shares no event loop with the
// test that measures latency meanwhile. Argument: JSON {url, auth: [id, secret], connections,
// durationMs, subnet}; each connection is a keep-alive client from an address of its own
// (`${subnet}.${n}`). Prints {"statuses": {status: count}} when done.
import { Agent, request } from 'node:http'

const { url, auth, connections, durationMs, subnet } = JSON.parse(process.argv[2])
const authorization = `Basic ${Buffer.from(`${auth[0]}:${auth[1]}`).toString('base64')}`
const statuses = {}
const until = Date.now() + durationMs
let n = 0

function post(agent, address, body) {
  return new Promise((resolve) => {
    const req = request(`${url}/token`, {
      method: 'POST',
      agent,
      localAddress: address,
      headers: { authorization, 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode))
    })
    req.on('error', () => resolve(0))
    req.end(body)
  })
}

await Promise.all(
  Array.from({ length: connections }, async (_, c) => {
    const address = `${subnet}.${c + 2}`
    const agent = new Agent({ keepAlive: true, maxSockets: 1, localAddress: address })
    while (Date.now() < until) {
      const body = new URLSearchParams({ grant_type: 'password', username: `user-${n++}`, password: 'guess' }).toString()
      const status = await post(agent, address, body)
      statuses[status] = (statuses[status] ?? 0) + 1
    }
    agent.destroy()
  }),
)
process.stdout.write(JSON.stringify({ statuses }) + '\n')
