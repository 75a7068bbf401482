// DATA_DIR's lock is the kernel's (flock): held while the holder lives, even stopped, whatever
// pid it has or claims; given back when it ends, however it ends.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { DataDirInUseError, lockDataDir } from '../../src/db/data-dir-lock.js'

const lockFile = (dir: string) => join(dir, 'pgdata.lock')
const holderScript = join(import.meta.dirname, 'hold-data-dir.ts')

/** Resolves to what the holder said first ("held <pid>" or "refused <message>"). */
function firstLine(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = ''
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d
      if (out.includes('\n')) resolve(out.split('\n')[0]!)
    })
    child.once('exit', (code) => resolve(out.split('\n')[0] || `exited ${code}`))
    child.once('error', reject)
  })
}

/** Another process holding `dir` with this module, as `tessera serve` does; `wrap` runs it inside another command. */
async function holder(t: Test, dir: string, wrap: string[] = []): Promise<{ child: ChildProcess; said: string }> {
  const args = [process.execPath, ...process.execArgv, holderScript, dir]
  const [command, ...rest] = [...wrap, ...args]
  const child = spawn(command!, rest, { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => {
    child.kill('SIGKILL')
  })
  return { child, said: await firstLine(child) }
}

const exited = (child: ChildProcess) =>
  child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((resolve) => child.once('exit', resolve))

t.test('one holder at a time, in this process too; given back, it can be taken again', async (t) => {
  const dir = t.testdir({})
  const release = await lockDataDir(dir)
  t.equal(readFileSync(lockFile(dir), 'utf8'), `${process.pid}\n`, 'names its holder')
  await t.rejects(lockDataDir(dir), DataDirInUseError, 'a second open in the same process is refused')
  const other = await holder(t, dir)
  t.match(other.said, new RegExp(`^refused ${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is in use by process ${process.pid}: one process at a time`), 'and in another')
  await release()
  t.ok(existsSync(lockFile(dir)), 'the file stays (removing a locked file would let a second lock a new one)')
  const again = await holder(t, dir)
  t.match(again.said, /^held /, 'another process takes it once given back')
})

t.test('a holder that claims our pid (pid 1 in another container) still holds it while it lives', async (t) => {
  const dir = t.testdir({})
  const first = await holder(t, dir)
  t.match(first.said, /^held /)
  // What a second container sees on the shared volume when both servers are pid 1: its own pid.
  writeFileSync(lockFile(dir), `${process.pid}\n`)
  await t.rejects(lockDataDir(dir), { name: 'DataDirInUseError' }, 'refused')
  // And with the holder's start time beside it, as the pid file once had.
  writeFileSync(lockFile(dir), `${process.pid} 1\n`)
  await t.rejects(lockDataDir(dir), { name: 'DataDirInUseError' }, 'refused')

  first.child.kill('SIGSTOP')
  t.teardown(() => {
    first.child.kill('SIGCONT')
  })
  await t.rejects(lockDataDir(dir), { name: 'DataDirInUseError' }, 'a stopped holder (a paused container) still holds it')

  first.child.kill('SIGKILL')
  await exited(first.child)
  // The lock is held by the holder's flock child, which exits once the holder's end of its pipe is
  // closed: moments after the kill, not in the same instant (seen refused once under CI load).
  const release = await lockedWithin(dir, 5000)
  t.pass('the holder killed, the kernel gave the lock back')
  await release()
})

t.test(
  'two servers each pid 1 in a pid namespace of its own, on one DATA_DIR: the second is refused',
  { skip: spawnSync('unshare', ['--pid', '--fork', '--mount-proc', 'true']).status !== 0 && 'needs unshare (root, or user namespaces)' },
  async (t) => {
    const dir = t.testdir({})
    // --kill-child: the namespace (the holder and its flock) ends with unshare.
    const ns = ['unshare', '--pid', '--fork', '--mount-proc', '--kill-child']
    const first = await holder(t, dir, ns)
    t.equal(first.said, 'held 1', 'the first is pid 1 and holds it')
    const second = await holder(t, dir, ns)
    t.equal(second.said.split(':')[0], `refused ${dir} is in use by process 1`, 'the second, pid 1 too, is refused')
    await exited(second.child)
    t.equal(second.child.exitCode, 3)
  },
)

t.test('a lock file left by a holder that is gone (a crash, any pid in it) is taken', async (t) => {
  const dir = t.testdir({})
  writeFileSync(lockFile(dir), '4194303\n')
  await (await lockDataDir(dir))()
  writeFileSync(lockFile(dir), `${process.pid}\n`)
  await (await lockDataDir(dir))()
  t.pass()
})

/** lockDataDir, retried while the directory is in use, for up to `ms`. */
async function lockedWithin(dir: string, ms: number): Promise<() => Promise<void>> {
  const deadline = Date.now() + ms
  for (;;) {
    try {
      return await lockDataDir(dir)
    } catch (err) {
      if (!(err instanceof DataDirInUseError) || Date.now() > deadline) throw err
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }
}
