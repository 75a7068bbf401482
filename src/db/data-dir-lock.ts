import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/** The embedded database is in use by another process (or already open in this one). */
export class DataDirInUseError extends Error {
  override name = 'DataDirInUseError'
  constructor(
    message: string,
    /** The process holding it, as that process sees its own pid, when known: `tessera doctor` names it. */
    readonly pid?: number,
  ) {
    super(message)
  }
}

/** Paths this process holds, so that opening the same directory twice is caught without a lock. */
const held = new Set<string>()

/**
 * Takes DATA_DIR for this process, for as long as the embedded database is open; resolves to the
 * function that gives it back. PGlite has no locking of its own, and two processes writing one
 * data directory corrupt it.
 *
 * The lock is the kernel's: flock(2) on DATA_DIR/pgdata.lock, held by a flock(1) child whose
 * standard input is a pipe from this process. The kernel lets go of it when that child ends, and
 * the child ends when the pipe does, which is when this process ends, however it ends (a crash,
 * SIGKILL, the OOM killer). A pid written in a file cannot do that: in a container the server is
 * pid 1, so a second container on the same volume (a one-off `migrate`, a start-first rolling
 * update) sees "pid 1, alive" and cannot tell whether that is itself or another, and a pid from
 * another pid namespace cannot be checked at all. A flock is shared by every process of one kernel
 * whatever its namespace, and a stopped holder (SIGSTOP, a paused container) still holds it.
 * Across hosts it holds as far as the filesystem passes flock on (Linux maps it to NFS locks).
 *
 * The file is never removed: removing a locked file lets the next process lock a new file of the
 * same name while the old one is still held. Its content, the holder's pid as the holder sees it,
 * is only for the message.
 */
export async function lockDataDir(dataDir: string): Promise<() => Promise<void>> {
  const path = join(dataDir, 'pgdata.lock')
  if (held.has(path)) throw inUse(dataDir, path, process.pid)
  held.add(path)
  try {
    const child = await holdFlock(dataDir, path)
    writeFileSync(path, `${process.pid}\n`)
    let released: Promise<void> | undefined
    return () => {
      released ??= new Promise<void>((resolve) => {
        held.delete(path)
        if (child.exitCode !== null || child.signalCode !== null) return resolve()
        // Waited for: the lock is free only once the child has ended.
        child.ref()
        child.once('exit', () => resolve())
        child.stdin!.end()
      })
      return released
    }
  } catch (err) {
    held.delete(path)
    throw err
  }
}

// Busybox's flock (the Alpine image) and util-linux's both take these short options: -x
// exclusive, -n fail at once when held. The command run under the lock says so, then waits for
// end of input; exec, so that no shell stays between the pipe and its reader.
const UNDER_LOCK = 'echo locked; exec cat >/dev/null'

function holdFlock(dataDir: string, path: string): Promise<ReturnType<typeof spawn>> {
  return new Promise((resolve, reject) => {
    const child = spawn('flock', ['-x', '-n', path, 'sh', '-c', UNDER_LOCK], { stdio: ['pipe', 'pipe', 'pipe'] })
    let out = ''
    let errText = ''
    let settled = false
    child.stderr.setEncoding('utf8').on('data', (d: string) => (errText += d))
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d
      if (settled || !out.includes('locked')) return
      settled = true
      // Held for as long as this process lives, but never what keeps it alive.
      child.stdout.destroy()
      child.stderr.destroy()
      child.unref()
      ;(child.stdin as unknown as { unref(): void }).unref()
      resolve(child)
    })
    child.on('error', (err: NodeJS.ErrnoException) => {
      if (settled) return
      settled = true
      reject(
        err.code === 'ENOENT'
          ? new Error(`cannot lock ${dataDir}: the flock command is not installed (util-linux, or busybox); the embedded database needs it, so that two processes never open it at once`)
          : err,
      )
    })
    child.on('exit', (code) => {
      if (settled) return
      settled = true
      // Exit code 1 and nothing said: the lock is held elsewhere (-n).
      if (code === 1 && errText.trim() === '') return reject(inUse(dataDir, path, holderPid(path)))
      reject(new Error(`cannot lock ${dataDir}: flock exited with ${code}: ${errText.trim()}`))
    })
  })
}

function holderPid(path: string): number | undefined {
  try {
    const n = Number(readFileSync(path, 'utf8').trim())
    return Number.isInteger(n) && n > 0 ? n : undefined
  } catch {
    return undefined
  }
}

const inUse = (dataDir: string, path: string, pid: number | undefined) =>
  new DataDirInUseError(
    `${dataDir} is in use by ${pid === undefined ? 'another process' : `process ${pid}`}: one process at a time may open the embedded database (the holder has ${path} locked; stop it first, wherever it runs: another container on the same volume counts)`,
    pid,
  )
