// Requests from a chosen source address: any 127.x.y.z reaches a server listening on 127.0.0.1,
// so one test can play many clients (node:http's localAddress).
import { Agent, request } from 'node:http'
import { basic, parseBody, type HttpResult } from './server.js'

/** A keep-alive connection from `address`, for many requests from one client. */
export const clientAgent = (address: string) => new Agent({ keepAlive: true, maxSockets: 1, localAddress: address })

/** POSTs a form to `url` + `path` from `address`, on a connection of its own (or `agent`'s). */
export function postFrom(
  address: string,
  url: string,
  path: string,
  form: Record<string, string>,
  auth?: [string, string],
  headers: Record<string, string> = {},
  agent?: Agent,
): Promise<HttpResult> {
  const body = new URLSearchParams(form).toString()
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}${path}`,
      {
        method: 'POST',
        localAddress: address,
        agent: agent ?? false,
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          'content-length': Buffer.byteLength(body),
          ...(auth && { authorization: basic(auth[0], auth[1]) }),
          ...headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString()
          const responseHeaders = new Headers()
          for (const [k, v] of Object.entries(res.headers)) if (typeof v === 'string') responseHeaders.set(k, v)
          resolve({ status: res.statusCode ?? 0, headers: responseHeaders, body: parseBody(text), text })
        })
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}
