// A TCP proxy the test owns, between Tessera and Postgres: cut() makes the database vanish the way
// a network failure or a failover does (every connection reset, new ones refused), restore()
// brings it back on the same port.
import { createServer, connect, type Server, type Socket } from 'node:net'

export class TcpProxy {
  private server: Server | undefined
  private readonly sockets = new Set<Socket>()
  private readonly pairs = new Set<[Socket, Socket]>()
  private stalled = false
  private constructor(
    readonly port: number,
    private readonly target: { host: string; port: number },
  ) {}

  static async start(target: { host: string; port: number }): Promise<TcpProxy> {
    const probe = createServer()
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
    const port = (probe.address() as { port: number }).port
    await new Promise((resolve) => probe.close(resolve))
    const proxy = new TcpProxy(port, target)
    await proxy.restore()
    return proxy
  }

  /** A proxy in front of the Postgres server a postgres:// URL names. */
  static forDatabase(databaseUrl: string): Promise<TcpProxy> {
    const url = new URL(databaseUrl)
    return TcpProxy.start({ host: url.hostname, port: Number(url.port || 5432) })
  }

  /** Points a postgres:// URL at this proxy. */
  url(databaseUrl: string): string {
    const url = new URL(databaseUrl)
    url.hostname = '127.0.0.1'
    url.port = String(this.port)
    return url.toString()
  }

  /** Accepts connections again, forwarding each to the target. */
  async restore(): Promise<void> {
    if (this.server !== undefined) return
    const server = createServer((inbound) => {
      const outbound = connect(this.target)
      this.sockets.add(inbound).add(outbound)
      const pair: [Socket, Socket] = [inbound, outbound]
      const drop = () => {
        inbound.destroy()
        outbound.destroy()
        this.sockets.delete(inbound)
        this.sockets.delete(outbound)
        this.pairs.delete(pair)
      }
      inbound.on('error', drop).on('close', drop)
      outbound.on('error', drop).on('close', drop)
      this.pairs.add(pair)
      if (!this.stalled) pipe(pair)
    })
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve))
    this.server = server
  }

  /** Resets every connection and refuses new ones until restore(). */
  async cut(): Promise<void> {
    const server = this.server
    this.server = undefined
    for (const socket of this.sockets) socket.resetAndDestroy()
    this.sockets.clear()
    this.pairs.clear()
    if (server !== undefined) await new Promise((resolve) => server.close(resolve))
  }

  /**
   * Holds every byte in both directions, on open connections and new ones, without closing
   * anything: a half-open network path, or a peer that stopped reading. resume() lets it all through.
   */
  stall(): void {
    this.stalled = true
    for (const [inbound, outbound] of this.pairs) {
      inbound.unpipe(outbound)
      outbound.unpipe(inbound)
      inbound.pause()
      outbound.pause()
    }
  }

  resume(): void {
    if (!this.stalled) return
    this.stalled = false
    for (const pair of this.pairs) pipe(pair)
  }

  async close(): Promise<void> {
    this.stalled = false
    await this.cut()
  }
}

function pipe([inbound, outbound]: [Socket, Socket]): void {
  inbound.pipe(outbound)
  outbound.pipe(inbound)
}
