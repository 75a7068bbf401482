// `.env` in the working directory, read once at start by the CLI, before the configuration.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseEnv } from 'node:util'
import { ConfigError } from './config.js'

type Env = Record<string, string | undefined>

export interface EnvFile {
  path: string
  /** The variables taken from the file: those the environment did not already have. */
  applied: string[]
  /** The variables in the file that the environment overrode. */
  overridden: string[]
}

const ASSIGNMENT = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$/
const QUOTES = ['"', "'", '`']

/**
 * Reads `.env` from `dir` into `env`, where the environment does not already name a variable:
 * the environment wins, as with `node --env-file`, so a deployment can override one setting of a
 * shared file. Undefined when there is no such file.
 *
 * Node's parser (util.parseEnv, which process.loadEnvFile uses too) skips what it does not
 * understand, and a line without `=` even swallows the name on the line after it; so every line is
 * checked first, and a malformed file is refused with the number of the line at fault (never its
 * text, which may hold a secret).
 */
export function loadEnvFile(dir: string = process.cwd(), env: Env = process.env): EnvFile | undefined {
  const path = join(dir, '.env')
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return undefined
    throw new ConfigError(`.env: cannot read ${path} (${code ?? (err as Error).message})`)
  }
  checkLines(text)
  const parsed = parseEnv(text)
  const applied: string[] = []
  const overridden: string[] = []
  for (const [name, value] of Object.entries(parsed)) {
    if (value === undefined) continue
    if (env[name] !== undefined) {
      overridden.push(name)
      continue
    }
    env[name] = value
    applied.push(name)
  }
  return { path, applied, overridden }
}

function checkLines(text: string): void {
  const lines = text.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim()
    if (line === '' || line.startsWith('#')) continue
    const m = ASSIGNMENT.exec(line)
    if (m === null) {
      throw new ConfigError(`.env line ${i + 1}: expected NAME=value (a name of letters, digits and _), or a # comment`)
    }
    const value = m[2]!.trimStart()
    const quote = QUOTES.find((q) => value.startsWith(q))
    if (quote === undefined || value.indexOf(quote, 1) !== -1) continue
    // A quoted value may span lines, up to the line that closes it.
    const start = i
    do i++
    while (i < lines.length && !lines[i]!.includes(quote))
    if (i >= lines.length) throw new ConfigError(`.env line ${start + 1}: the quoted value of ${m[1]} is never closed`)
  }
}
