// HTTP/1.1 at the level of connections, for the tests of what a shutdown does to them: requests
// over a keep-alive node:http Agent (as load balancers and client pools hold them), requests held
// back in the middle, and raw sockets that send exactly the bytes given.
import * as http from 'node:http'
import * as net from 'node:net'
import { parseBody } from './server.js'

export interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: any
}

export interface Sent {
  answer: Promise<Answer>
  /** Sends the rest of a request made with `holdLastByte`. */
  release(): void
}

/**
 * One request over `agent`. With `holdLastByte`, the headers and all of the body but its last
 * byte go out now and the request stays unfinished (in flight at the server) until release().
 */
export function send(
  agent: http.Agent,
  url: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string; holdLastByte?: boolean },
): Sent {
  const body = Buffer.from(opts.body ?? '')
  let release = () => {}
  const answer = new Promise<Answer>((resolve, reject) => {
    const request = http.request(
      url,
      { method: opts.method ?? 'GET', agent, headers: { ...opts.headers, 'content-length': String(body.length) } },
      (response) => {
        let text = ''
        response.setEncoding('utf8')
        response.on('data', (chunk: string) => (text += chunk))
        response.on('end', () => resolve({ status: response.statusCode!, headers: response.headers, body: parseBody(text) }))
        response.on('error', reject)
      },
    )
    request.on('error', reject)
    if (opts.holdLastByte === true && body.length > 0) {
      request.write(body.subarray(0, body.length - 1))
      release = () => request.end(body.subarray(body.length - 1))
    } else {
      request.end(body)
    }
  })
  return { answer, release: () => release() }
}


export const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString()

/** The sockets an agent keeps open (in use or idle) for any origin. */
export function openSockets(agent: http.Agent): number {
  const count = (pool: NodeJS.ReadOnlyDict<unknown[]>) => Object.values(pool).reduce((n, list) => n + (list?.length ?? 0), 0)
  return count(agent.sockets) + count(agent.freeSockets)
}

/** A raw TCP connection to the host and port of `url`; `closed` settles when it ends. */
export class RawConnection {
  readonly socket: net.Socket
  readonly closed: Promise<void>
  private buffer = ''
  private waiting: (() => void) | undefined

  private constructor(socket: net.Socket) {
    this.socket = socket
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => {
      this.buffer += chunk
      this.waiting?.()
    })
    // A reset (the server destroying the connection) is an ending like any other here.
    socket.on('error', () => undefined)
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()))
    socket.on('close', () => this.waiting?.())
  }

  static open(url: string): Promise<RawConnection> {
    const { hostname, port } = new URL(url)
    return new Promise((resolve, reject) => {
      const socket = net.connect(Number(port), hostname, () => resolve(new RawConnection(socket)))
      socket.once('error', reject)
    })
  }

  write(text: string): void {
    this.socket.write(text)
  }

  /** Reads one response (status line, headers, a Content-Length body) off the connection. */
  async response(): Promise<Answer> {
    for (;;) {
      const end = this.buffer.indexOf('\r\n\r\n')
      if (end >= 0) {
        const [statusLine, ...lines] = this.buffer.slice(0, end).split('\r\n')
        const headers: Record<string, string> = {}
        for (const line of lines) {
          const colon = line.indexOf(':')
          headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
        }
        const length = Number(headers['content-length'] ?? 0)
        if (this.buffer.length >= end + 4 + length) {
          const body = this.buffer.slice(end + 4, end + 4 + length)
          this.buffer = this.buffer.slice(end + 4 + length)
          return { status: Number(statusLine!.split(' ')[1]), headers, body: parseBody(body) }
        }
      }
      if (this.socket.destroyed || this.socket.readableEnded) throw new Error(`connection ended before a whole response: ${JSON.stringify(this.buffer)}`)
      await new Promise<void>((resolve) => (this.waiting = resolve))
      this.waiting = undefined
    }
  }
}
