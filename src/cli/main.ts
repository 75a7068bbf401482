#!/usr/bin/env node
import cluster from 'node:cluster'
import { ConfigError, loadConfig } from '../config.js'
import { loadEnvFile } from '../env-file.js'
import { exitWhenIdle } from '../exit.js'
import { runAdminCommand, runAuditCommand } from './admin.js'

// The server's modules (database drivers, fastify, argon2) are loaded only by the commands that
// need them: an admin command is a short HTTP client and starts about three times faster so.
const serverModules = async () => {
  const [{ createLogger }, { startServer }] = await Promise.all([import('../log.js'), import('../server.js')])
  return { createLogger, startServer }
}
const migrationModules = async () => {
  const [{ createLogger }, { openDatabase }, { migrate }] = await Promise.all([
    import('../log.js'),
    import('../db/connect.js'),
    import('../db/migrate.js'),
  ])
  return { createLogger, openDatabase, migrate }
}

const USAGE = `usage: tessera <command>

  serve                     run the server (configured by the environment and ./.env; see .env.example)
  migrate                   apply database migrations and exit
  doctor [--json] [--url URL]
                            check the configuration, database, migrations, keys, clock and the
                            public URL; each problem with its fix; exits 1 if any check fails
  config [--json]           print the effective configuration, secrets masked
  client create|list|show|rotate-secret|revoke-tokens|delete
  user create|list|show|disable|enable|set-password|unlock|revoke-tokens|delete
  keys list|rotate [--immediate]|reseal
  audit [--type LIST] [--user USER] [--client ID] [--since TIME] …
                            security events, newest first

Admin commands call the admin API: --admin-url (default $TESSERA_ADMIN_URL or
http://127.0.0.1:8081), credentials from TESSERA_ADMIN_CLIENT_ID / TESSERA_ADMIN_CLIENT_SECRET
or DATA_DIR/admin-client.json. --json prints machine-readable output. Passwords are read from
stdin or a prompt. \`tessera <client|user|keys|audit> --help\` lists a group's commands and options.
`

async function serve(): Promise<void> {
  const config = loadConfig()
  if (config.webConcurrency > 1 && cluster.isPrimary) return (await import('../cluster.js')).runPrimary(config)
  const { createLogger, startServer } = await serverModules()
  const log = createLogger(config.logLevel)
  const server = await startServer(config, { log })
  let closing = false
  const shutdown = (signal: string) => {
    if (closing) return
    closing = true
    log.info({ signal }, 'shutting down')
    server.close().then(
      ({ destroyed }) => {
        log.info({ destroyed }, 'shut down')
        // 0 even when connections had to be cut off at the deadline: the stop that was asked
        // for happened, and a supervisor must not take it for a crash (the warning says why).
        exitWhenIdle(0)
      },
      (err: unknown) => {
        log.error({ err }, 'shutdown failed')
        exitWhenIdle(1)
      },
    )
  }
  process.on('SIGTERM', () => shutdown('SIGTERM'))
  process.on('SIGINT', () => shutdown('SIGINT'))
  if (cluster.isWorker) (await import('../cluster.js')).announceReady()
}

async function runMigrations(): Promise<void> {
  const config = loadConfig()
  const { createLogger, openDatabase, migrate } = await migrationModules()
  const log = createLogger(config.logLevel)
  const database = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, log })
  try {
    const { applied } = await migrate(database.db)
    log.info({ applied }, applied.length > 0 ? 'migrations applied' : 'database is up to date')
  } finally {
    await database.close()
  }
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  const helping = command === undefined || ['help', '--help', '-h'].includes(command)
  // Before anything reads the environment; a cluster worker finds the primary's variables already
  // set, so the file changes nothing there.
  const envFile = helping ? undefined : loadEnvFile()
  switch (command) {
    case 'doctor':
      return (await import('./doctor.js')).runDoctor(rest)
    case 'config':
      return (await import('./show-config.js')).runConfigCommand(rest, envFile)
    case 'serve':
      await serve()
      return -1
    case 'migrate':
      await runMigrations()
      return 0
    case 'client':
    case 'user':
    case 'keys':
      // An HTTP client needs none of it, but a bad value stops every command alike: the same
      // environment would stop `tessera serve`.
      loadConfig()
      return runAdminCommand(command, rest)
    case 'audit':
      loadConfig()
      return runAuditCommand(rest)
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE)
      return command === undefined ? 2 : 0
    default:
      process.stderr.write(`tessera: unknown command "${command}"\n\n${USAGE}`)
      return 2
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code
  },
  (err: unknown) => {
    if (err instanceof ConfigError) process.stderr.write(`tessera: ${err.message}\n`)
    else process.stderr.write(`tessera: ${err instanceof Error ? err.message : String(err)}\n`)
    // Not just exitCode: a cluster worker that failed to start would wait on its primary forever.
    exitWhenIdle(1)
  },
)
