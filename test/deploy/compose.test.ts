// docker-compose.yml and the proxy's Caddyfile, without a Docker engine (there is none where the
// suite runs): the structure the deployment guide promises, read from the files, and, where the
// tools are installed, `docker compose config` (or docker-compose's) and `caddy validate`. Each
// run says in its comments which of those it could do.
import t, { type Test } from 'tap'
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse } from 'yaml'
import { packageRoot } from '../../src/paths.js'

const composeText = readFileSync(join(packageRoot, 'docker-compose.yml'), 'utf8')
const caddyfile = readFileSync(join(packageRoot, 'deploy', 'Caddyfile'), 'utf8')
const REPLICAS = ['tessera-1', 'tessera-2']

/** The variables the README says to put in .env. */
const dotEnv = {
  KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
  BOOTSTRAP_ADMIN_CLIENT_ID: 'admin',
  BOOTSTRAP_ADMIN_CLIENT_SECRET: randomBytes(32).toString('base64'),
  POSTGRES_PASSWORD: randomBytes(24).toString('hex'),
}

type Service = Record<string, any>

function ipInSubnet(ip: string, cidr: string): boolean {
  const [net, bits] = cidr.split('/')
  const n = (a: string) => a.split('.').reduce((acc, o) => acc * 256 + Number(o), 0)
  const mask = 2 ** 32 - 2 ** (32 - Number(bits))
  return (n(ip) & mask) >>> 0 === (n(net!) & mask) >>> 0
}

/** The checks on a compose model: the file as written, or as a validator resolved it. */
function checkStructure(t: Test, model: any, resolved: boolean): void {
  const services = model.services as Record<string, Service>
  t.match(services['postgres']?.image, /^postgres:16/, 'Postgres 16')
  t.notOk(services['postgres']?.ports, 'the database port is not published')

  const [a, b] = REPLICAS.map((name) => services[name]!)
  t.ok(a && b, 'two Tessera replicas')
  t.same(a!.build, b!.build, 'built from the same source')
  t.equal(a!.image, b!.image, 'one image')
  t.same(a!.environment, b!.environment, 'the same configuration: one ISSUER, one KEY_ENCRYPTION_KEY, one database')
  const env = a!.environment as Record<string, string>
  t.match(env['DATABASE_URL'], /^postgres:\/\/tessera:.+@postgres:5432\/tessera$/, 'DATABASE_URL names the postgres service')
  if (resolved) {
    t.equal(env['KEY_ENCRYPTION_KEY'], dotEnv.KEY_ENCRYPTION_KEY, 'KEY_ENCRYPTION_KEY from .env')
    t.equal(env['BOOTSTRAP_ADMIN_CLIENT_SECRET'], dotEnv.BOOTSTRAP_ADMIN_CLIENT_SECRET, 'the admin secret from .env')
    t.equal(env['DATABASE_URL'], `postgres://tessera:${dotEnv.POSTGRES_PASSWORD}@postgres:5432/tessera`)
    t.equal(env['ISSUER'], 'http://localhost:8080', 'the default ISSUER: the proxy')
  } else {
    // Required, not defaulted: Compose refuses to start without them.
    for (const name of ['KEY_ENCRYPTION_KEY', 'BOOTSTRAP_ADMIN_CLIENT_ID', 'BOOTSTRAP_ADMIN_CLIENT_SECRET']) {
      t.match(env[name], new RegExp(`^\\$\\{${name}:\\?`), `${name} must come from .env or the environment`)
    }
    t.match(env['DATABASE_URL'], /\$\{POSTGRES_PASSWORD:\?/)
  }
  for (const replica of [a!, b!]) {
    // The public API through the proxy only; the admin API on the container's loopback (the
    // image's ADMIN_HOST), reached with `docker compose exec`, never published.
    t.same(replica.ports ?? [], [], 'no port of a replica is published')
    t.same(replica.expose ?? [], [], 'nor exposed to the other containers')
    t.equal(replica.environment?.['ADMIN_HOST'], undefined, "the image's ADMIN_HOST (loopback) stands")
    t.match(replica.healthcheck?.test?.join(' '), /\/readyz/, 'health check on /readyz')
    const grace = Number(/^(\d+)s$/.exec(String(replica.stop_grace_period))?.[1] ?? Number(replica.stop_grace_period))
    t.ok(grace > Number(env['SHUTDOWN_TIMEOUT'] ?? 10), 'the stop grace period outlasts SHUTDOWN_TIMEOUT')
  }

  const proxy = services['proxy']!
  t.ok(proxy, 'a reverse proxy')
  const published = (proxy.ports ?? []).map((p: unknown) => (typeof p === 'string' ? p : `${(p as any).published}:${(p as any).target}`))
  t.same(published, ['8080:8080'], 'the proxy is the public entry')
  t.ok((proxy.volumes ?? []).some((v: unknown) => /deploy\/Caddyfile:\/etc\/caddy\/Caddyfile/.test(typeof v === 'string' ? v : `${(v as any).source}:${(v as any).target}`)))
  const proxyAddress = proxy.networks?.tessera?.ipv4_address as string
  const subnet = model.networks?.tessera?.ipam?.config?.[0]?.subnet as string
  t.equal(env['TRUST_PROXY'], proxyAddress, 'the replicas trust exactly the proxy')
  t.ok(ipInSubnet(proxyAddress, subnet), `${proxyAddress} is in ${subnet}`)
}

t.test('the compose file, as written', async (t) => {
  checkStructure(t, parse(composeText, { merge: true }), false)
})

t.test('the image serves the admin API on its own loopback and exposes the public port only', async (t) => {
  const dockerfile = readFileSync(join(packageRoot, 'Dockerfile'), 'utf8')
  // The runtime stage's instructions, comments left out.
  const runtime = dockerfile.slice(dockerfile.indexOf('AS runtime')).split('\n').filter((l) => !l.trimStart().startsWith('#')).join('\n')
  const env = Object.fromEntries([...runtime.matchAll(/\b([A-Z_]+)=(\S+)/g)].map((m) => [m[1], m[2]]))
  t.equal(env['ADMIN_HOST'], '127.0.0.1', 'ADMIN_HOST')
  t.equal(env['HOST'], '0.0.0.0', 'the public API on every interface')
  t.same([...runtime.matchAll(/^EXPOSE\s+(.+)$/gm)].map((m) => m[1]!.trim()), ['8080'], 'EXPOSE')
})

t.test('the Caddyfile balances over both replicas', async (t) => {
  const upstreams = /reverse_proxy\s+([^{\n]+)\{/.exec(caddyfile)?.[1]?.trim().split(/\s+/)
  t.same(upstreams, REPLICAS.map((r) => `${r}:8080`))
  t.match(caddyfile, /^:8080 \{/m, 'listens where the compose file publishes')
  t.match(caddyfile, /health_uri \/healthz/)
  t.match(caddyfile, /lb_try_duration/)
})

/** `docker compose` or `docker-compose`, whichever works here. */
function composeTool(): string[] | undefined {
  for (const command of [['docker', 'compose'], ['docker-compose']]) {
    const r = spawnSync(command[0]!, [...command.slice(1), 'version'], { encoding: 'utf8' })
    if (r.status === 0) return command
  }
  return undefined
}

const tool = composeTool()
t.test('docker compose config, given the variables the README says to set', { skip: tool === undefined && 'neither docker compose nor docker-compose is installed: the structure was checked from the file alone' }, async (t) => {
  t.comment(`validated with: ${tool!.join(' ')}`)
  const dir = t.testdir({})
  copyFileSync(join(packageRoot, 'docker-compose.yml'), join(dir, 'docker-compose.yml'))
  mkdirSync(join(dir, 'deploy'))
  copyFileSync(join(packageRoot, 'deploy', 'Caddyfile'), join(dir, 'deploy', 'Caddyfile'))
  // Nothing from this process's environment: only .env, as the README has it.
  const env = { PATH: process.env['PATH'] ?? '', HOME: dir }
  const run = () => spawnSync(tool![0]!, [...tool!.slice(1), 'config'], { cwd: dir, env, encoding: 'utf8' })

  const bare = run()
  t.not(bare.status, 0, 'refused without the secrets')
  t.match(bare.stderr, /set (KEY_ENCRYPTION_KEY|BOOTSTRAP_ADMIN_CLIENT_ID|BOOTSTRAP_ADMIN_CLIENT_SECRET|POSTGRES_PASSWORD)/)

  writeFileSync(join(dir, '.env'), Object.entries(dotEnv).map(([k, v]) => `${k}=${v}\n`).join(''))
  const r = run()
  t.equal(r.status, 0, r.stderr)
  checkStructure(t, parse(r.stdout), true)
})

const caddy = spawnSync('caddy', ['version'], { encoding: 'utf8' }).status === 0
t.test('caddy validate', { skip: !caddy && 'caddy is not installed: the Caddyfile was checked as text only' }, async (t) => {
  const r = spawnSync('caddy', ['validate', '--config', join(packageRoot, 'deploy', 'Caddyfile'), '--adapter', 'caddyfile'], { encoding: 'utf8' })
  t.equal(r.status, 0, r.stderr)
  t.match(r.stdout + r.stderr, /Valid configuration/)
})
