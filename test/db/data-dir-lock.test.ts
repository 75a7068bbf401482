import { spawn } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { DataDirInUseError, lockDataDir } from '../../src/db/data-dir-lock.js'

const lockFile = (dir: string) => join(dir, 'pgdata.lock')

/** A process that runs until the test kills it. */
async function otherProcess(t: Test): Promise<number> {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' })
  t.teardown(() => {
    child.kill()
  })
  await new Promise((resolve) => child.once('spawn', resolve))
  return child.pid!
}

/** The pid of a process that has exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' })
  await new Promise((resolve) => child.once('exit', resolve))
  return child.pid!
}

t.test('one holder at a time, in this process too', async (t) => {
  const dir = t.testdir({})
  const release = lockDataDir(dir)
  t.match(readFileSync(lockFile(dir), 'utf8'), new RegExp(`^${process.pid}\\b`), 'names its holder')
  t.throws(() => lockDataDir(dir), DataDirInUseError, 'a second open in the same process is refused')
  release()
  t.notOk(existsSync(lockFile(dir)), 'given back')
  t.doesNotThrow(() => lockDataDir(dir)(), 'and can be taken again')
})

t.test('a running holder keeps it; the message names it and the way out', async (t) => {
  const dir = t.testdir({})
  const pid = await otherProcess(t)
  writeFileSync(lockFile(dir), `${pid}\n`)
  t.throws(() => lockDataDir(dir), {
    name: 'DataDirInUseError',
    message: new RegExp(`in use by process ${pid}: .*remove ${lockFile(dir).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`),
  })
  t.equal(readFileSync(lockFile(dir), 'utf8'), `${pid}\n`, 'left alone')
})

t.test('a lock whose holder is gone is taken over', async (t) => {
  const dir = t.testdir({})
  writeFileSync(lockFile(dir), `${await deadPid()}\n`)
  const release = lockDataDir(dir)
  t.match(readFileSync(lockFile(dir), 'utf8'), new RegExp(`^${process.pid}\\b`))
  release()

  // Left by an earlier process with this process's pid (pid 1 in a container, restarted).
  writeFileSync(lockFile(dir), `${process.pid}\n`)
  t.doesNotThrow(() => lockDataDir(dir)(), 'our own pid, not held: an earlier life')
})

t.test('a running process with the holder pid but another start time is not the holder', { skip: !existsSync('/proc/self/stat') && 'needs /proc' }, async (t) => {
  const dir = t.testdir({})
  const pid = await otherProcess(t)
  writeFileSync(lockFile(dir), `${pid} 1\n`)
  t.doesNotThrow(() => lockDataDir(dir)(), 'the pid was reused')
})
