import type { Server, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'

export interface Drain {
  /**
   * Stops accepting connections and closes each open one as soon as it has nothing in flight;
   * after `timeoutMs`, destroys whatever is left. Resolves to the number of connections destroyed
   * (0: everything finished in time).
   */
  (timeoutMs: number): Promise<number>
}

/**
 * Makes a listener drainable. Call before it listens, so that it sees every connection.
 *
 * `server.close()` alone is not a shutdown: it stops accepting and closes the connections idle at
 * that moment, then waits for the others to end, and a keep-alive connection whose response
 * finishes afterwards goes back to idle and stays open for the client's next request. So every
 * response written from the start of the drain says `Connection: close`, which makes Node end the
 * connection once it is sent; a request that arrives during the drain on a connection already open
 * is still answered (the client had no way to know), the same way.
 */
export function drainable(server: Server): Drain {
  const sockets = new Set<Socket>()
  const unanswered = new Set<ServerResponse>()
  let draining = false

  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  // Ahead of the app's own listener, so that the header is set before anything is written.
  server.prependListener('request', (_request, response: ServerResponse) => {
    if (draining) return closeAfter(response)
    unanswered.add(response)
    response.once('close', () => unanswered.delete(response))
  })

  return (timeoutMs) => {
    draining = true
    for (const response of unanswered) closeAfter(response)
    return new Promise<number>((resolve) => {
      let destroyed = 0
      const deadline = setTimeout(() => {
        destroyed = sockets.size
        for (const socket of sockets) socket.destroy()
      }, timeoutMs)
      // Resolves once every connection has ended; it also closes the idle keep-alive ones at once.
      server.close(() => {
        clearTimeout(deadline)
        resolve(destroyed)
      })
      // Node counts a connection that has not sent a byte yet as busy (its first request's timeout
      // runs), but nothing is in flight on it: a load balancer's spare connection would otherwise
      // hold the shutdown until the deadline.
      for (const socket of sockets) if (socket.bytesRead === 0) socket.destroy()
    })
  }
}

function closeAfter(response: ServerResponse): void {
  // Headers already sent mean a response being streamed (Tessera writes each of its answers in
  // one go): its connection stays open after it and is destroyed at the deadline.
  if (!response.headersSent) response.setHeader('connection', 'close')
}
