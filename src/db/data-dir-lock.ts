import { randomBytes } from 'node:crypto'
import { linkSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/** The embedded database is in use by another process (or already open in this one). */
export class DataDirInUseError extends Error {
  override name = 'DataDirInUseError'
  constructor(
    message: string,
    /** The process holding it, when known: `tessera doctor` names it. */
    readonly pid?: number,
  ) {
    super(message)
  }
}

/** Paths this process holds, so that opening the same directory twice is caught too. */
const held = new Set<string>()

/**
 * Takes DATA_DIR for this process, for as long as the embedded database is open; returns the
 * function that gives it back. PGlite has no locking of its own, and two processes writing one
 * data directory corrupt it.
 *
 * The lock is a file naming its holder: the pid and, where /proc has it, the process's start
 * time, so that a pid reused after a restart (pid 1 in every container) is not taken for the
 * holder. A holder that no longer runs crashed without giving it back; the next start takes it
 * over. Not covered: two processes taking over the same stale lock at the same instant, and
 * processes that cannot see each other's pids (containers sharing one volume).
 */
export function lockDataDir(dataDir: string): () => void {
  const path = join(dataDir, 'pgdata.lock')
  if (held.has(path)) throw inUse(dataDir, path, process.pid)
  for (let attempt = 0; attempt < 3; attempt++) {
    if (tryCreate(path)) {
      held.add(path)
      return () => {
        held.delete(path)
        rmSync(path, { force: true })
      }
    }
    const holder = readHolder(path)
    if (holder !== undefined && isRunning(holder)) throw inUse(dataDir, path, holder.pid)
    rmSync(path, { force: true })
  }
  throw new DataDirInUseError(`cannot lock ${dataDir}: ${path} keeps changing`)
}

interface Holder {
  pid: number
  startTime: string | undefined
}

/**
 * Creates the lock file with its content in one step (a hard link to a finished file fails if
 * the name exists), so that nobody reads it half-written and takes it for stale.
 */
function tryCreate(path: string): boolean {
  const draft = `${path}.${process.pid}.${randomBytes(4).toString('hex')}`
  const start = startTime(process.pid)
  writeFileSync(draft, `${process.pid}${start === undefined ? '' : ` ${start}`}\n`, { mode: 0o600 })
  try {
    linkSync(draft, path)
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false
    throw err
  } finally {
    rmSync(draft, { force: true })
  }
}

/** Undefined when the file is gone (given back meanwhile) or not a lock this code wrote. */
function readHolder(path: string): Holder | undefined {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  const [pid, start] = text.trim().split(' ')
  const n = Number(pid)
  return Number.isInteger(n) && n > 0 ? { pid: n, startTime: start } : undefined
}

function isRunning(holder: Holder): boolean {
  // Our own pid, but not in `held`: left by an earlier process that had the same pid.
  if (holder.pid === process.pid) return false
  try {
    process.kill(holder.pid, 0)
  } catch (err) {
    // EPERM: it runs, as another user.
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false
  }
  const now = startTime(holder.pid)
  return holder.startTime === undefined || now === undefined || now === holder.startTime
}

/** The process's start time in clock ticks since boot (proc(5), field 22), on Linux. */
function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name (field 2) is in parentheses and may contain spaces.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
  } catch {
    return undefined
  }
}

const inUse = (dataDir: string, path: string, pid: number) =>
  new DataDirInUseError(
    `${dataDir} is in use by process ${pid}: one process at a time may open the embedded database (if that process is not Tessera, remove ${path})`,
    pid,
  )
